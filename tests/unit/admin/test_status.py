"""``status`` reads the state store and changes nothing in it."""

from __future__ import annotations

import socket
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from rich.console import Console

from bridge.admin.status import (
    ChannelHealth,
    QueueStatus,
    StateStatus,
    StatusReport,
    WorkerHealth,
    _state_status,
    ask_worker,
    collect_status,
    render_status,
)
from bridge.config import KORDIAM_FEEDBACK, OpsSettings, QueueSettings, StatusSettings
from bridge.queue.gate import ReceiveGate
from bridge.state.base import RECONCILE_SWEEP
from bridge.state.sqlite import SCHEMA_VERSION, SqliteStateStore
from tests.support import T0, worker_ops
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


async def test_status_counts_the_elements_parked_for_each_configured_channel_and_names_it_a_problem(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    try:
        for element_id in (1, 2, 3):
            await store.park(element_id, "web", "HTTP 401 incorrect_password")
        # Not a configured channel (renamed or removed since): counted too, as no worker requeues them.
        await store.park(4, "print", "HTTP 401")
        await store.park(5, "fax", "HTTP 401")
        await store.unpark(5, "fax")  # nothing left parked: not shown
    finally:
        await store.close()

    state, channels = await _state_status(settings(path))

    assert state.available
    assert channels["web"].parked == 3 and channels["print"].parked == 1 and "fax" not in channels
    assert KORDIAM_FEEDBACK not in channels  # nothing parked for it: no row for what is no channel of the operator's
    report = StatusReport(
        datetime.now(UTC),
        QueueStatus("queue", "q"),
        QueueStatus("dead-letter queue", "dlq"),
        state,
        [
            ChannelHealth("web", "folder", True, parked=channels["web"].parked),
            ChannelHealth("print", None, False, parked=channels["print"].parked),
        ],
        WorkerHealth(None, False),
    )
    assert report.problems == [
        "channel web: 3 element(s) parked: it refused the bridge's credentials or was down "
        "(`kordiam-bridge parked list` says which)",
        "channel print (not configured): 1 element(s) parked, which no worker requeues "
        "(`kordiam-bridge parked requeue --channel print`)",
    ]


async def test_status_shows_kordiams_feedback_as_a_row_of_its_own_while_elements_are_parked_for_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    try:
        await store.park(7, KORDIAM_FEEDBACK, "feedback: KordiamUnavailable: PATCH /elements/7/publications/1: 503")
    finally:
        await store.close()

    state, channels = await _state_status(settings(path))

    assert state.available and channels[KORDIAM_FEEDBACK].parked == 1


async def test_status_says_where_the_reconciliation_sweep_resumes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    try:
        state, _ = await _state_status(settings(path))
        assert state.available and state.reconcile_cursor is None  # no sweep finished yet
        await store.advance_sweep_cursor(RECONCILE_SWEEP, T0)
    finally:
        await store.close()

    state, _ = await _state_status(settings(path))

    assert state.reconcile_cursor == T0
    report = StatusReport(
        T0 + timedelta(minutes=20),
        QueueStatus("queue", "q"),
        QueueStatus("dead-letter queue", "dlq"),
        state,
        [],
        WorkerHealth(None, False),
    )
    console = Console(record=True, width=200)
    render_status(report, console)
    assert "Reconciliation sweep: resumes from 2026-03-01T09:30:00+00:00 (20m ago)" in console.export_text()


async def test_a_paused_worker_is_reported_with_since_when_it_takes_no_messages(tmp_path: Path) -> None:
    """The worker's gate records when it closed and ``/readyz`` answers it: ``status`` says since when, both in its
    problems and its worker line."""
    gate = ReceiveGate()
    async with worker_ops(gate) as ops:
        gate.close("kordiam-outage", "Kordiam does not answer: HTTP 503")
        paused = settings(tmp_path / "state.db").model_copy(update={"ops": OpsSettings(port=ops.port)})
        answer = await ask_worker(paused, 5.0)
    since = answer.health.not_ready_since
    assert since is not None and gate.closed_since is not None
    assert since == datetime.fromtimestamp(int(gate.closed_since), UTC)
    report = StatusReport(
        datetime.now(UTC),
        QueueStatus("queue", "q"),
        QueueStatus("dead-letter queue", "dlq"),
        StateStatus("sqlite:///x", True),
        [],
        answer.health,
    )
    stamp = since.isoformat(timespec="seconds")
    assert f"worker not ready since {stamp}: Kordiam does not answer: HTTP 503" in report.problems
    console = Console(width=200, record=True)
    render_status(report, console)
    assert f"not ready since {stamp} (Kordiam does not answer: HTTP 503)" in console.export_text()


async def test_another_server_on_the_ops_port_is_not_taken_for_a_paused_worker(tmp_path: Path) -> None:
    """9090 is also Prometheus's default port: its 404 for /readyz must not read as a worker taking no messages."""

    async def not_found(_: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    app = web.Application()
    app.router.add_get("/{tail:.*}", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        stranger = settings(tmp_path / "state.db").model_copy(update={"ops": OpsSettings(port=port)})
        answer = await ask_worker(stranger, 5.0)
    finally:
        await runner.cleanup()
    assert not answer.health.reachable and answer.health.not_ready_reason is None
    assert "something other than the bridge's worker answers there" in (answer.health.detail or "")
    assert "/readyz: HTTP 404" in (answer.health.detail or "")


async def test_a_queue_that_cannot_be_reached_is_a_problem_and_the_rest_is_still_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen by hand at 3 a.m.: with SQS down, `status` (the runbook's first step) said only "configuration error:
    queue.endpoint_url: cannot reach SQS" (exit 2), hiding the worker's health and the state store's deliveries and
    parked elements. An unreachable queue is one problem among those it reports (exit 1)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    try:
        await store.park(1, "web", "HTTP 401")
    finally:
        await store.close()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    down = settings(path).model_copy(
        update={
            "queue": QueueSettings(url=f"{endpoint}/123456789012/q", endpoint_url=endpoint, region="eu-central-1"),
            "ops": OpsSettings(host="127.0.0.1", port=port),
        }
    )

    report = await collect_status(down, ops_timeout=1.0)

    assert report.queue.error is not None and "cannot reach SQS" in report.queue.error
    assert report.state.available and report.channels[0].parked == 1
    assert report.problems[0].startswith("queue: queue.endpoint_url: cannot reach SQS")
    assert any("1 element(s) parked" in problem for problem in report.problems)
