"""A 404 that is not Kordiam's word on the element: the sync engine on the simulator over HTTP.

A 404 ``resource-not-found`` ("does not exist or is not visible") is how Kordiam says an element is gone, and the
bridge retracts what it delivered. A 404 ``endpoint-not-found`` (a path nothing routes: a gateway, or Kordiam
mid-deployment), or a 404 page that is not Problem Details at all (a proxy's HTML), says nothing of the element: it
must not take the element's items out of every channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bridge.config import FeedbackSettings
from bridge.errors import KordiamUnavailable
from bridge.http import HttpClient
from bridge.kordiam.client import ONE_ATTEMPT, KordiamClient
from bridge.pipeline.notification import Notification
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import SyncEngine, SyncFailed
from bridge.simulator import RunningSimulator
from tests.support import SimulatorAdmin
from tests.unit.fakes import MemoryStateStore, ScriptedChannel

pytestmark = pytest.mark.integration

WEB = 99003


@pytest.fixture
async def client(quiet_simulator: RunningSimulator) -> AsyncIterator[KordiamClient]:
    async with HttpClient(max_connections=4, timeout=5) as http:
        yield KordiamClient(
            http,
            base_url=quiet_simulator.base_url,
            client_id="demo-client",
            client_secret=SecretStr("demo-secret"),
            retry=ONE_ATTEMPT,
        )


async def synced_once(kordiam: SimulatorAdmin, client: KordiamClient) -> tuple[SyncEngine, ScriptedChannel, int]:
    web = ScriptedChannel("web")
    engine = SyncEngine(
        kordiam=client,
        routes=[Route(web, frozenset({WEB}))],
        state=MemoryStateStore(),
        feedback=FeedbackSettings(),
        main_channel="web",
    )
    created = await kordiam.create({"title": "Story", "publications": [{"platform": {"id": WEB}}]})
    await engine.sync(Notification(created["id"]))
    assert len(web.items) == 1
    return engine, web, created["id"]


async def test_a_404_endpoint_not_found_retracts_nothing(kordiam: SimulatorAdmin, client: KordiamClient) -> None:
    engine, web, element_id = await synced_once(kordiam, client)
    await kordiam.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=404, type="endpoint-not-found")
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(element_id))
    assert web.deletes == [] and len(web.items) == 1
    (failure,) = raised.value.failures
    assert failure.stage == "fetch" and isinstance(failure.error, KordiamUnavailable)
    assert "endpoint-not-found" in str(failure.error) or "Endpoint not found" in str(failure.error)


async def test_a_404_resource_not_found_still_retracts(kordiam: SimulatorAdmin, client: KordiamClient) -> None:
    engine, web, element_id = await synced_once(kordiam, client)
    await kordiam.delete(element_id)
    report = await engine.sync(Notification(element_id))
    assert report.deleted_element and len(web.deletes) == 1 and web.items == {}
