"""Fault injection on Kordiam's message queue (ActiveMQ over STOMP): a worker killed or stopped mid-batch, and the
broker itself restarted mid-run. Nothing lost, nothing delivered twice, nothing dead-lettered."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.faults.conftest import Figures, assert_each_story_once
from tests.support import (
    SimulatorAdmin,
    deliveries,
    eventually,
    stomp_drain,
    stop_worker_mid_batch,
    story,
    worker_process,
)

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).parents[2] / "scripts" / "activemq.sh"


def expected_deliveries(stories: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    channels = ("web", "print")
    return sorted((s["id"], ch, p["id"]) for s in stories for ch, p in zip(channels, s["publications"], strict=True))


def channel_files(workdir: Path) -> list[str]:
    return [f"{channel}/{p.name}" for channel in ("web", "print") for p in sorted((workdir / channel).glob("*.json"))]


def record(figures: Figures, stories: list[dict[str, Any]], workdir: Path, dead: int) -> None:
    expected = {f"{ch}/{e}-{p}.json" for e, ch, p in expected_deliveries(stories)}
    files = channel_files(workdir)
    figures.sent = len(stories)
    figures.delivered = len(deliveries(workdir))
    figures.dead_lettered = dead
    figures.duplicates = len(files) - len(set(files)) + len(set(files) - expected)
    figures.lost = len(expected - set(files))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_worker_on_activemq_stopped_mid_batch_then_restarted(
    sig: signal.Signals,
    stomp_config: tuple[Path, int],
    stomp_queues: tuple[str, str],
    stomp_admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    path, ops_port = stomp_config
    stories, stop_seconds = await stop_worker_mid_batch(sig, path, stomp_admin, tmp_path)
    delivered_before = len(deliveries(tmp_path))

    # The broker hands the first worker's unacknowledged messages to the second; the state store deduplicates.
    async with worker_process(path, ops_port, tmp_path / "worker-2.log", ready_within=20):
        await eventually(
            lambda: deliveries(tmp_path) == expected_deliveries(stories), timeout=60, what="every story delivered"
        )
    dead = await stomp_drain(stomp_queues[1])
    record(figures, stories, tmp_path, len(dead))
    figures.notes = {"delivered_before_stop": delivered_before, "stop_seconds": round(stop_seconds, 2)}
    for created in stories:
        element = await stomp_admin.get(created["id"])
        assert all(p.get("externalId") for p in element["publications"])
    assert_each_story_once(figures)


async def broker(command: str, url: str) -> None:
    """``scripts/activemq.sh start|stop`` for the test broker (its port from the URL, its home from the environment)."""
    env = {**os.environ, "ACTIVEMQ_PORT": str(urlparse(url).port)}
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def port_closed(url: str) -> bool:
    parsed = urlparse(url)
    try:
        _, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    except OSError:
        return True
    writer.close()
    return False


async def test_broker_restart_mid_run_loses_nothing(
    activemq: str,
    stomp_config: tuple[Path, int],
    stomp_queues: tuple[str, str],
    stomp_admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    path, ops_port = stomp_config
    stories = [await stomp_admin.create(story(f"Before {n}")) for n in range(10)]
    await stomp_admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=429, count=6, retry_after=1)
    async with worker_process(path, ops_port, tmp_path / "worker.log", ready_within=20) as (worker, ops):

        async def ready() -> bool:
            return (await ops.get("/readyz")).status_code == 200

        async def not_ready() -> bool:
            return not await ready()

        await eventually(lambda: len(deliveries(tmp_path)) >= 2, what="first deliveries")
        await broker("stop", activemq)
        try:
            if not await port_closed(activemq):
                pytest.skip(f"the broker at {activemq} was not started by scripts/activemq.sh (ACTIVEMQ_HOME)")
            down_at = time.monotonic()
            await eventually(not_ready, what="/readyz reporting the lost broker")
            answer = await ops.get("/readyz")
            assert answer.json()["reason"] == "queue connection lost; reconnecting"  # not "not started"
            # Reconnecting by itself is no stall: a restart would not bring the broker back.
            assert (await ops.get("/healthz")).status_code == 200
        finally:
            await broker("start", activemq)
        await eventually(ready, timeout=60, what="/readyz after the broker is back")
        outage = time.monotonic() - down_at
        stories += [await stomp_admin.create(story(f"After {n}")) for n in range(10)]
        await eventually(
            lambda: deliveries(tmp_path) == expected_deliveries(stories), timeout=90, what="every story delivered"
        )

        # The worker says so in its log, both ways (it looks at the connection once a second).
        def logged_both_ways() -> bool:
            return {"broker_connection_lost", "broker_reconnected"} <= {e.get("event") for e in worker.events()}

        await eventually(logged_both_ways, what="the log lines of the lost and regained connection")
    assert worker.process.returncode == 0
    dead = await stomp_drain(stomp_queues[1])
    record(figures, stories, tmp_path, len(dead))
    figures.notes = {"outage_seconds": round(outage, 1)}
    assert_each_story_once(figures)
