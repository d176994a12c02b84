"""The sweep over a span of days against the simulator over HTTP: listed a day at a time with
``modificationDateTo``, as Kordiam reads it (inclusive, to the second), it lists every change of the span, one at
the second where two days meet among them, and stores its place a day at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from bridge.http import HttpClient
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.reconcile import WINDOW, Reconciler
from bridge.simulator import RunningSimulator, SimulatorSettings
from bridge.state.base import RECONCILE_SWEEP, StateStore
from tests.unit.fakes import FakeTransport, MemoryStateStore

pytestmark = pytest.mark.integration

OVERLAP = timedelta(seconds=120)


class CursorsKept(MemoryStateStore):
    """Remembers every place the sweep stored, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[datetime] = []

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        self.stored.append(to)
        await super().advance_sweep_cursor(sweep, to)


async def test_a_sweep_over_days_lists_every_change_a_day_at_a_time() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = [now]
    state: StateStore
    with RunningSimulator(SimulatorSettings(), clock=lambda: at[0]) as running:
        async with (
            HttpClient(max_connections=4, timeout=5) as http,
            httpx.AsyncClient(base_url=running.base_url) as admin,
        ):
            stored = now - 3 * WINDOW
            edge = stored - OVERLAP + WINDOW  # where the first day ends and the second begins
            created = []
            for moment in (stored - OVERLAP, edge, edge + timedelta(hours=30), now):
                at[0] = moment
                created.append((await admin.post("/_admin/elements", json={"title": "A story"})).json()["id"])
            at[0] = now
            state = CursorsKept()
            await state.advance_sweep_cursor(RECONCILE_SWEEP, stored)
            client = KordiamClient(
                http, base_url=running.base_url, client_id="demo-client", client_secret=SecretStr("demo-secret")
            )
            transport = FakeTransport([])
            sweep = Reconciler(
                kordiam=client, state=state, transport=transport, interval=60, lookback=3600, lease_seconds=60
            )
            await sweep.sweep()

    assert {json.loads(body)["id"] for body in transport.sent} == set(created)
    assert state.stored == [stored, edge, edge + WINDOW, edge + 2 * WINDOW, now]
