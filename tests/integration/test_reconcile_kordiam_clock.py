"""The sweep against the simulator over HTTP with Kordiam's clock behind the worker's: each sweep lists from
Kordiam's clock (the list's ``Date``), so a change Kordiam stamps in its own past is not skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from bridge.http import HttpClient
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.reconcile import Reconciler
from bridge.simulator import RunningSimulator, SimulatorSettings
from tests.unit.fakes import FakeTransport, MemoryStateStore

pytestmark = pytest.mark.integration

KORDIAM_BEHIND = timedelta(minutes=10)  # more than the sweep's overlap, less than its lookback


def kordiam_clock() -> datetime:
    return datetime.now(UTC) - KORDIAM_BEHIND


async def test_a_sweep_lists_what_a_kordiam_clock_behind_the_workers_stamped() -> None:
    # Before the simulator dated its answers by its own clock, uvicorn's wall-clock Date told the sweep that Kordiam's
    # clock was the worker's: the second sweep listed from the worker's now and missed the story changed in between.
    with RunningSimulator(SimulatorSettings(), clock=kordiam_clock) as running:
        async with (
            HttpClient(max_connections=4, timeout=5) as http,
            httpx.AsyncClient(base_url=running.base_url) as admin,
        ):
            client = KordiamClient(
                http, base_url=running.base_url, client_id="demo-client", client_secret=SecretStr("demo-secret")
            )
            transport = FakeTransport([])
            sweep = Reconciler(
                kordiam=client,
                state=MemoryStateStore(),
                transport=transport,
                interval=60,
                lookback=3600,
                lease_seconds=60,
            )
            first = (await admin.post("/_admin/elements", json={"title": "First"})).json()
            assert await sweep.sweep() == 1
            second = (await admin.post("/_admin/elements", json={"title": "Second"})).json()
            await sweep.sweep()
    enqueued = [json.loads(body)["id"] for body in transport.sent]
    assert enqueued[0] == first["id"] and second["id"] in enqueued[1:]
