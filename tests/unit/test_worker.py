"""Worker assembly: the ops port answers from the start's first step, and a stop during start-up ends the start at
once, whatever start-up is waiting for."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.worker import StopEndsStart, run_worker
from tests.support import HeldKordiam, free_port, held_kordiam

# The longest kordiam.timeout the configuration takes: without the fix the start waits all of it.
LONGEST_KORDIAM_TIMEOUT = 120


@pytest.fixture
async def hanging_kordiam() -> AsyncIterator[HeldKordiam]:
    async with held_kordiam(answer_token=False) as kordiam:
        yield kordiam


def settings_on(kordiam: str, workdir: Path, *, ops_port: int = 9090) -> Settings:
    # The queue is never reached: the start stops on the token request before it connects.
    return Settings(
        ops={"host": "127.0.0.1", "port": ops_port},
        queue={"url": "http://127.0.0.1:9/000000000000/never", "endpoint_url": "http://127.0.0.1:9"},
        kordiam={
            "base_url": kordiam,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "timeout": LONGEST_KORDIAM_TIMEOUT,
        },
        state={"url": f"sqlite:///{workdir / 'state.db'}"},
        channels=[{"name": "web", "type": "folder", "platforms": [99003], "path": str(workdir / "web")}],
    )


async def test_a_stop_while_the_first_token_request_hangs_ends_the_start_at_once(
    hanging_kordiam: HeldKordiam, tmp_path: Path
) -> None:
    # Before: the worker waited out kordiam.timeout (120 s here; the suite's own timeout ends the test first),
    # logged Kordiam unreachable, and went on to connect to the queue.
    stop = asyncio.Event()
    with capture_logs() as logs:
        worker = asyncio.create_task(run_worker(settings_on(hanging_kordiam.url, tmp_path), stop, serve_ops=False))
        holding = asyncio.create_task(hanging_kordiam.held.wait())
        await asyncio.wait({worker, holding}, return_when=asyncio.FIRST_COMPLETED)
        assert hanging_kordiam.held.is_set(), f"the worker ended before asking for a token: {worker}"
        stop.set()
        await worker  # ends, and cleanly, while Kordiam still holds the token request unanswered
    assert not hanging_kordiam.released.is_set()
    assert hanging_kordiam.held_requests == ["POST /api/v2/auth/token HTTP/1.1"]
    events = [entry["event"] for entry in logs]
    assert "stopped_during_start_up" in events
    assert "kordiam_unreachable_at_start" not in events and "worker_ready" not in events


async def test_a_stop_already_set_never_starts_the_worker(hanging_kordiam: HeldKordiam, tmp_path: Path) -> None:
    stop = asyncio.Event()
    stop.set()
    with capture_logs() as logs:
        await run_worker(settings_on(hanging_kordiam.url, tmp_path), stop, serve_ops=False)
    assert "stopped_during_start_up" in [entry["event"] for entry in logs]


async def test_a_start_that_ends_before_the_stop_is_left_alone() -> None:
    stop = asyncio.Event()
    async with StopEndsStart(stop) as start:
        await asyncio.sleep(0)
    stop.set()
    await asyncio.sleep(0)  # a stop after the start cancels nothing: this task goes on
    assert not start.stopped
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_from_outside_during_the_start_is_kept() -> None:
    # The stop's own cancellation ends at the start; one that also came from elsewhere goes on.
    stop = asyncio.Event()
    entered = asyncio.Event()

    async def starting() -> None:
        async with StopEndsStart(stop):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(starting())
    await entered.wait()
    stop.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_ops_port_answers_alive_and_not_started_while_the_start_waits(
    hanging_kordiam: HeldKordiam, tmp_path: Path
) -> None:
    # Before: ops.port was bound once everything else had started, so a start waiting on Kordiam (its token, up to
    # kordiam.timeout), the state store, the parked load or the queue had no /healthz: a liveness probe (ECS, the
    # image's HEALTHCHECK) found nothing listening and could kill a worker that was only starting.
    ops_port = free_port()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings_on(hanging_kordiam.url, tmp_path, ops_port=ops_port), stop))
    try:
        holding = asyncio.create_task(hanging_kordiam.held.wait())
        await asyncio.wait({worker, holding}, return_when=asyncio.FIRST_COMPLETED)
        assert hanging_kordiam.held.is_set(), f"the worker ended before asking for a token: {worker}"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}", timeout=5) as ops:
            health, ready = await ops.get("/healthz"), await ops.get("/readyz")
    finally:
        stop.set()
        await worker
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (503, {"status": "not ready", "reason": "not started"})
    with socket.socket() as again:
        again.bind(("127.0.0.1", ops_port))  # the stop during the start let the port go


async def test_a_taken_ops_port_stops_the_start_before_it_opens_anything(
    hanging_kordiam: HeldKordiam, tmp_path: Path
) -> None:
    # Before: the port was found taken only after the state store, Kordiam's token and the queue (here the start
    # waited on the token request instead, and would have gone on to connect to the queue).
    stop = asyncio.Event()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ops_port = taken.getsockname()[1]
        worker = asyncio.create_task(run_worker(settings_on(hanging_kordiam.url, tmp_path, ops_port=ops_port), stop))
        holding = asyncio.create_task(hanging_kordiam.held.wait())
        try:
            await asyncio.wait({worker, holding}, return_when=asyncio.FIRST_COMPLETED)
            assert worker.done(), f"the start went on past a taken ops port: {hanging_kordiam.held_requests}"
        finally:
            stop.set()
            holding.cancel()
        with pytest.raises(ConfigError) as raised:
            await worker
    assert str(raised.value) == f"ops.port: cannot listen on 127.0.0.1:{ops_port}: address already in use"
    assert hanging_kordiam.held_requests == []
    assert not (tmp_path / "state.db").exists()  # the state store was not opened either
