"""A channel call whose failure opens the channel's breaker, or is its failed probe: the element is parked for the
channel as one that met the open breaker, not retried through the queue, where the probe's message would spend a
receive on every failed probe and be dead-lettered so (bridge.pipeline.sync, bridge.pipeline.parking)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bridge.channels.base import ChannelResult
from bridge.channels.guard import BreakerState, GuardedChannel
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Publication
from bridge.pipeline.notification import Notification
from bridge.pipeline.sync import Action, SyncFailed
from tests.unit.fakes import FakeKordiam, ManualClock, MemoryStateStore, ScriptedChannel, element_body, publication
from tests.unit.pipeline.test_parking import WEB, engine_with, parked_ids

DOWN = ChannelUnavailable("web: HTTP 503")


def stories(kordiam: FakeKordiam, count: int) -> list[int]:
    ids = list(range(1, count + 1))
    for element_id in ids:
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    return ids


async def test_the_upsert_failure_that_opens_the_breaker_parks_its_element(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    first, second, third = stories(kordiam, 3)
    inner = ScriptedChannel("web")
    inner.fail = DOWN
    web = GuardedChannel(inner, breaker_threshold=2, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))

    with pytest.raises(SyncFailed):
        await engine.sync(Notification(first))  # before the breaker opens: the message's failure, retried
    with capture_logs() as lines:
        report = await engine.sync(Notification(second))  # the 2nd failure opens it: parked, not a failure

    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.PARKED)]
    assert [p.reason for p in await state.parked("web")] == [
        "channel web: circuit open after 2 failures; the last: web: HTTP 503"
    ]
    assert web.breaker.state is BreakerState.OPEN and web.breaker.failures == 2  # its counts as before
    assert engine.parking.owes("web")
    assert "channel_down_parking" in [line["event"] for line in lines]
    await engine.sync(Notification(third))  # meets the open breaker
    assert await parked_ids(state, "web") == [second, third]


async def test_a_failed_half_open_probe_parks_its_element(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    first, second = stories(kordiam, 2)
    inner = ScriptedChannel("web")
    inner.fail = DOWN
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=300.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(first))  # opens the breaker: parked
    web.breaker.probe_now()  # the cool-down has passed: the next call is the probe

    report = await engine.sync(Notification(second))  # the probe fails

    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.PARKED)]
    assert await parked_ids(state, "web") == [first, second]
    assert web.breaker.state is BreakerState.OPEN and web.breaker.cooldown == 600.0


async def test_the_delete_failure_that_opens_the_breaker_parks_the_retraction(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    (element_id,) = stories(kordiam, 1)
    inner = ScriptedChannel("web")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(element_id))
    del kordiam.elements[element_id]  # deleted in Kordiam: its item is retracted
    inner.fail = DOWN

    report = await engine.sync(Notification(element_id))

    assert [(a.channel, a.publication_id, a.action) for a in report.actions] == [("web", 10, Action.PARKED)]
    assert await parked_ids(state, "web") == [element_id]
    assert (element_id, "web", 10) in state.rows  # the delivery stays for the requeue's retraction


class RejectedAsTheBreakerOpens(ScriptedChannel):
    """Rejects the story while another element's call, running alongside, fails and opens the breaker."""

    def __init__(self) -> None:
        super().__init__("web")
        self.guard: GuardedChannel | None = None

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        assert self.guard is not None
        self.guard.breaker.failed(DOWN)
        raise ChannelRejected("web: HTTP 422 the story has no body")


async def test_a_rejected_story_is_the_messages_failure_even_when_the_breaker_opened_meanwhile(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    (element_id,) = stories(kordiam, 1)
    inner = RejectedAsTheBreakerOpens()
    web = inner.guard = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))

    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(element_id))

    assert [(f.stage, type(f.error)) for f in raised.value.failures] == [("web", ChannelRejected)]
    assert web.breaker.state is BreakerState.OPEN and await parked_ids(state, "web") == []
