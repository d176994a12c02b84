"""Fixtures the pipeline's unit tests share: Kordiam and the state store, in process (and the real SQLite store in a
temporary folder), and a clock moved by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.state import SqliteStateStore
from tests.unit.fakes import FakeKordiam, ManualClock, MemoryStateStore


@pytest.fixture
def kordiam() -> FakeKordiam:
    return FakeKordiam()


@pytest.fixture
def state() -> MemoryStateStore:
    return MemoryStateStore()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
