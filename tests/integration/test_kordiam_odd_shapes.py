"""The Kordiam client and the sweep against the simulator over HTTP, with elements of shapes the models do not
expect: each is an unexpected answer (``UnexpectedResponse``, one line naming where), never another exception."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.errors import UnexpectedResponse
from bridge.http import HttpClient
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.reconcile import Reconciler
from bridge.simulator import RunningSimulator
from tests.support import SimulatorAdmin
from tests.unit.fakes import FakeTransport, MemoryStateStore

pytestmark = pytest.mark.integration

# Each passes the simulator's own checks (objects with ids), and each broke a model's before-validator with a
# TypeError, AttributeError or KeyError instead of a ValidationError.
ODD = [
    pytest.param({"publications": [{"platform": {"id": 99003}, "single": {"start": 5}}]}, id="single-start-a-number"),
    pytest.param({"publications": [{"platform": {"id": 99003}, "single": {"start": "x"}}]}, id="single-start-a-text"),
    pytest.param({"customFields": [{"id": 3, "selectedOption": {}}]}, id="selected-option-without-id"),
]


@pytest.fixture
async def client(quiet_simulator: RunningSimulator) -> AsyncIterator[KordiamClient]:
    async with HttpClient(max_connections=4, timeout=5) as http:
        yield KordiamClient(
            http, base_url=quiet_simulator.base_url, client_id="demo-client", client_secret=SecretStr("demo-secret")
        )


@pytest.mark.parametrize("odd", ODD)
async def test_an_element_of_an_odd_shape_is_an_unexpected_answer(
    odd: dict[str, Any], kordiam: SimulatorAdmin, client: KordiamClient
) -> None:
    created = await kordiam.create({"title": "Odd", **odd})
    with pytest.raises(UnexpectedResponse, match=r"unexpected Element shape at "):
        await client.get_element(created["id"])


@pytest.mark.parametrize("odd", ODD)
async def test_an_odd_element_in_the_list_does_not_stop_the_sweep(
    odd: dict[str, Any], kordiam: SimulatorAdmin, client: KordiamClient
) -> None:
    unreadable = await kordiam.create({"title": "Odd", **odd})
    fine = await kordiam.create({"title": "Fine", "publications": [{"platform": {"id": 99003}}]})
    transport = FakeTransport([])
    sweep = Reconciler(
        kordiam=client, state=MemoryStateStore(), transport=transport, interval=60, lookback=3600, lease_seconds=120
    )
    # The odd one is enqueued too: its lost notification may be what the sweep is for, and the worker's fetch
    # dead-letters it with the reason, where the sweep could only log it.
    assert await sweep.sweep() == 2
    assert sorted(json.loads(body)["id"] for body in transport.sent) == sorted([unreadable["id"], fine["id"]])
