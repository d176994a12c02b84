"""``status`` reads the state store and changes nothing in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.admin.status import _state_status
from bridge.config import StatusSettings
from bridge.state.sqlite import SCHEMA_VERSION
from tests.unit.state.test_sqlite import _migrate_up_to


def settings(path: Path) -> StatusSettings:
    return StatusSettings.model_validate(
        {
            "queue": {"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/q", "region": "eu-central-1"},
            "state": {"url": f"sqlite:///{path}"},
            "channels": [{"name": "web", "type": "folder", "path": str(path.parent / "web"), "platforms": [1]}],
        }
    )


async def test_status_does_not_migrate_a_state_file_workers_of_an_earlier_version_still_use(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, SCHEMA_VERSION - 1)

    state, channels = await _state_status(settings(path))

    assert not state.available and f"schema version {SCHEMA_VERSION - 1}" in (state.detail or "")
    assert channels == {}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION - 1
