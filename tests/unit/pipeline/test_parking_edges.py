"""Parking at its edges, found by an independent review: a refused channel with nothing left parked does not poll
the store; carriers that bring no news back slow down for a refused channel too; two requeues of one element do
not unpark it once it was parked anew; a store failure while parking one channel leaves no other channel's call
running past the sync (bridge.pipeline.parking, bridge.pipeline.sync)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest

from bridge.channels.base import ChannelResult
from bridge.kordiam.models import Element, Publication
from bridge.pipeline.notification import Notification
from bridge.pipeline.parking import Admission, ChannelParking, ParkedRequeue
from bridge.pipeline.sync import SyncFailed
from bridge.state.base import Parked, StateUnavailable
from tests.unit.fakes import (
    FakeKordiam,
    FakeTransport,
    ManualClock,
    MemoryStateStore,
    ScriptedChannel,
    element_body,
    publication,
)
from tests.unit.pipeline.test_parking import OPEN, PRINT, REFUSED, WEB, engine_with, parked_ids


# 1 ---------------------------------------------------------------------------------------------------------------
async def test_a_confirmed_refusal_with_nothing_left_parked_does_not_poll_the_store(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.refused("web", Admission.GO, REFUSED)  # confirmed: the secret is wrong
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 1.0
    await requeue.round()  # the carrier goes, and element 1 is unparked with it
    assert len(transport.sent) == 1 and await state.parked_count("web") == 0
    # Its sync never calls web (the publication left web's platform meanwhile, or another worker took it and its
    # own trial was not due, or an operator's `parked requeue` emptied the channel): no trial, no park here.
    clock.now += 2.0  # the carrier's back-off has passed
    reads = 0
    original = state.parked

    async def counting(channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        nonlocal reads
        reads += 1
        return await original(channel, after=after, limit=limit)

    state.parked = counting  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.ensure_future(requeue.run(stop))
    await asyncio.sleep(1.0)  # one second of wall time, the clocks standing still
    stop.set()
    await task
    assert reads <= 2, f"{reads} reads of the parked elements in one second"


# 2 ---------------------------------------------------------------------------------------------------------------
async def test_two_requeues_of_one_element_do_not_unpark_it_once_it_was_parked_anew(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", "circuit open")  # generation 1
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    parking.accepted("web", Admission.GO)  # web recovered here; on worker B too, which requeues as well

    class Meanwhile(FakeTransport):
        async def send(
            self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None
        ) -> str:
            sent = await super().send(body, attributes, group_id=group_id)
            element_id = json.loads(body)["id"]
            # Worker B's requeue had read element 1 too (generation 1), sent it and unparked it (its notification
            # synced: web accepted it) ...
            await state.unpark(element_id, "web", generation=1)
            # ... and the notification this worker just sent is taken by a worker whose web breaker opened again:
            # the element is parked anew, and its row starts over at generation 1.
            await state.park(element_id, "web", "circuit open again")
            return sent

    await ParkedRequeue(parking, state=state, transport=Meanwhile([]), channels=["web"]).round()
    assert await parked_ids(state, "web") == [1]  # the channel still owes element 1 the sync just parked


# 3 ---------------------------------------------------------------------------------------------------------------
async def test_carriers_of_a_refused_channel_that_bring_no_news_back_go_at_a_growing_back_off(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # As for a down channel (test_carriers_that_bring_no_news_back_go_at_a_doubling_back_off): another worker takes
    # each carrier (its own trial not due: parked there without a call) and this worker never hears.
    for element_id in range(1, 60):
        await state.park(element_id, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock, max_trial_seconds=8.0)
    parking.refused("web", Admission.GO, REFUSED)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 1.0
    sent = 0
    for _ in range(60):  # 30 s
        before = len(transport.sent)
        await requeue.round()
        sent += len(transport.sent) - before
        clock.now += 0.5
    # 1, 2, 4, 8, 8, 8 s ...: about 6 carriers in 30 s, not one a second
    assert sent <= 8, f"{sent} carriers in 30 s"


# 4 ---------------------------------------------------------------------------------------------------------------
async def test_a_store_failure_parking_one_channel_leaves_no_other_channels_call_running_past_the_sync(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    web.fail = OPEN
    gate = asyncio.Event()
    first = True
    original_upsert = paper.upsert

    async def slow_first(element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        nonlocal first
        if first:
            first = False
            await gate.wait()  # the print CMS is slow to answer the first attempt's create
        return await original_upsert(element, publication, external_id)

    paper.upsert = slow_first  # type: ignore[method-assign]
    engine = engine_with(kordiam, state, clock, (web, WEB), (paper, PRINT))
    original_park = state.park

    async def park_down(element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        raise StateUnavailable("SQLite state.db: disk I/O error")

    state.park = park_down  # type: ignore[method-assign]
    opening = asyncio.get_running_loop().call_later(0.2, gate.set)  # print answers 0.2 s after it was called
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    assert [f.stage for f in raised.value.failures] == ["state"]
    # The sync is over and its lease given back: the queue retries the message (here: at once, the store back).
    state.park = original_park  # type: ignore[method-assign]
    await engine.sync(Notification(1))
    await asyncio.sleep(0.3)  # the first attempt's print call, if it was left running, has answered by now
    opening.cancel()
    creates = [external_id for publication_id, external_id in paper.upserts if external_id is None]
    assert len(creates) == 1, f"print got {len(creates)} creates of publication 12"
