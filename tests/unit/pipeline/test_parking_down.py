"""A channel whose circuit breaker is open: the element is parked for it, not retried through the queue (and not
dead-lettered once the outage outlasts the retry budget); the first call that succeeds requeues what it parked,
and when no message comes, a parked element carries the breaker's probe (bridge.pipeline.parking)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import pytest
from structlog.testing import capture_logs

from bridge.channels.guard import GuardedChannel
from bridge.errors import ChannelCircuitOpen, ChannelUnavailable
from bridge.pipeline.notification import Notification
from bridge.pipeline.parking import Admission, ChannelParking, ParkedRequeue
from bridge.pipeline.sync import Action, SyncFailed
from tests.unit.fakes import (
    FakeKordiam,
    FakeTransport,
    FindingChannel,
    ManualClock,
    MemoryStateStore,
    ScriptedChannel,
    element_body,
    publication,
)
from tests.unit.pipeline.test_parking import OPEN, PRINT, REFUSED, WEB, engine_with, parked_ids


async def test_an_open_circuit_parks_the_element_and_the_rest_of_the_sync_goes_on(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    web.fail = OPEN
    engine = engine_with(kordiam, state, clock, (web, WEB), (paper, PRINT))

    with capture_logs() as lines:
        report = await engine.sync(Notification(1))  # no SyncFailed: the outage is not the message's failure

    assert {(a.channel, a.publication_id, a.action) for a in report.actions} == {
        ("web", 11, Action.PARKED),
        ("print", 12, Action.CREATED),
    }
    assert [p.reason for p in await state.parked("web")] == ["channel web: circuit open after 5 failures"]
    assert engine.parking.owes("web") and not engine.parking.refusing("web")
    assert engine.parking.admit("web") is Admission.GO  # the breaker, not the parking, decides who probes
    assert [line["event"] for line in lines if line["log_level"] == "warning"] == ["channel_down_parking"]


async def test_the_channels_own_failure_before_the_breaker_opens_is_still_the_messages_to_retry(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelUnavailable("web: HTTP 503")
    engine = engine_with(kordiam, state, clock, (web, WEB))
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    assert [(f.stage, type(f.error)) for f in raised.value.failures] == [("web", ChannelUnavailable)]
    assert await parked_ids(state, "web") == [] and not engine.parking.owes("web")


async def test_a_real_breaker_parks_from_the_call_that_opens_it_and_its_successful_probe_requeues(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    inner = ScriptedChannel("web")
    inner.fail = ChannelUnavailable("web: HTTP 503")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=0.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))

    report = await engine.sync(Notification(1))  # the failure that opens the breaker: parked, not retried
    assert [a.action for a in report.actions] == [Action.PARKED]
    web.breaker.cooldown = 3600.0
    report = await engine.sync(Notification(2))
    assert [a.action for a in report.actions] == [Action.PARKED] and inner.upserts == []
    assert await parked_ids(state, "web") == [1, 2]

    inner.fail = None
    web.breaker.cooldown = 0.0  # the cool-down has passed: the next call is the breaker's probe
    report = await engine.sync(Notification(3))
    assert [a.action for a in report.actions] == [Action.CREATED]
    assert not engine.parking.owes("web") and engine.parking.requeue_due == {"web"}


async def test_a_parked_requeue_after_the_fix_makes_the_first_requeued_element_the_breakers_probe(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Drill: a folder channel made read-only, fixed, then `parked requeue --channel print`: every requeued element
    # met the still-open breaker and was parked again at once, so the runbook's step did nothing and the channel
    # waited out a cool-down that a long outage doubles to 10 minutes.
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    inner = ScriptedChannel("web")
    inner.fail = ChannelUnavailable("web: HTTP 503")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))  # opens the breaker for an hour: parked
    assert [a.action for a in (await engine.sync(Notification(2))).actions] == [Action.PARKED]

    inner.fail = None  # fixed; the operator requeues, and the first notification names the channel
    report = await engine.sync(Notification(2, try_now=frozenset({"web"})))
    assert [a.action for a in report.actions] == [Action.CREATED]
    assert not engine.parking.owes("web") and engine.parking.requeue_due == {"web"}


async def test_a_deleted_elements_search_meeting_an_open_circuit_is_parked(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    web = FindingChannel("web")
    web.fail_find = OPEN
    engine = engine_with(kordiam, state, clock, (web, WEB))
    report = await engine.sync(Notification(5))  # never synced, and gone from Kordiam: only the search runs
    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.PARKED)]
    assert await parked_ids(state, "web") == [5]


async def test_a_down_channel_gets_a_carrier_once_its_breaker_may_probe_and_then_at_the_breakers_time(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        await state.park(element_id, "web", str(OPEN))
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)

    assert parking.next_due() == pytest.approx(30.0)
    await requeue.round()
    assert transport.sent == []  # the breaker's cool-down has 30 s to go
    clock.now += 30.0
    await requeue.round()
    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]  # one carrier, not one per round
    assert transport.attributes[0]["source"] == "parked-trial"  # whoever gets it accepted requeues the rest
    clock.now += 0.5
    await requeue.round()
    assert len(transport.sent) == 1  # on its way
    parking.changed.clear()
    parking.circuit_open("web", OPEN)  # the carrier met the breaker still open (cool-down 30 s), parked again
    assert parking.changed.is_set()  # the requeue task planned the next carrier after the back-off: it plans again
    parking.changed.clear()
    parking.circuit_open("web", OPEN)  # another story meeting the breaker changes no plan: no wake-up for it
    assert not parking.changed.is_set()
    clock.now += 29.0
    await requeue.round()
    assert len(transport.sent) == 1
    clock.now += 1.0
    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1, 2]


async def test_a_carrier_whose_probe_fails_holds_the_next_back_for_the_breakers_new_cool_down(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Observed: the carrier's probe failed (`breaker_open cooldown=10.0`) and a second carrier went 1 s later, to
    # meet the breaker open again and be parked at once: a fetch and a send for nothing, every cool-down.
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    inner = ScriptedChannel("web")
    inner.fail = ChannelUnavailable("web: HTTP 503")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=300.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))  # opens the breaker: parked
    await engine.sync(Notification(2))
    await engine.sync(Notification(3))
    assert await parked_ids(state, "web") == [1, 2, 3]
    transport = FakeTransport([])
    requeue = ParkedRequeue(engine.parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 300.0
    web.breaker.probe_now()  # its cool-down has passed: the next call is the breaker's probe
    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]

    report = await engine.sync(Notification(1, carrier=True))  # its probe fails: the breaker opens for 600 s
    assert [a.action for a in report.actions] == [Action.PARKED]  # parked again, no receive spent
    assert web.breaker.cooldown == 600.0
    for step in (1.0, 2.0, 596.0):  # the carrier back-off (1 s, doubling) would have sent one at each
        clock.now += step
        await requeue.round()
    assert len(transport.sent) == 1
    clock.now += 2.0
    await requeue.round()
    # Not sooner than the breaker's time; element 1, parked again since it was first, carries it again.
    assert [json.loads(body)["id"] for body in transport.sent] == [1, 1]


async def test_a_storys_failed_probe_holds_the_carriers_back_for_the_breakers_new_cool_down(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    inner = ScriptedChannel("web")
    inner.fail = ChannelUnavailable("web: HTTP 503")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=300.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))  # opens the breaker: parked
    await engine.sync(Notification(2))  # parked: a carrier is due once the cool-down (300 s) has passed
    clock.now += 300.0
    web.breaker.probe_now()
    report = await engine.sync(Notification(3))  # a story comes first, and its call is the probe: it fails
    assert [a.action for a in report.actions] == [Action.PARKED]
    transport = FakeTransport([])
    requeue = ParkedRequeue(engine.parking, state=state, transport=transport, channels=["web"], clock=clock)
    await requeue.round()
    assert transport.sent == []  # a carrier now would meet the breaker open again for 600 s
    clock.now += 601.0
    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]


async def test_carriers_that_bring_no_news_back_go_at_a_doubling_back_off(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # Another worker takes each carrier and its breaker lets the call through, or the queue retries it: this
    # worker never hears, and must neither wait for a news that will not come nor send one a second.
    for element_id in range(1, 10):
        await state.park(element_id, "web", str(OPEN))
    parking = ChannelParking(state, ["web"], clock=clock, max_trial_seconds=4.0)
    parking.circuit_open("web", OPEN)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)
    sent_at = []
    clock.now += 30.0
    for _ in range(200):
        before = len(transport.sent)
        await requeue.round()
        if len(transport.sent) > before:
            sent_at.append(clock.now - 1030.0)
        clock.now += 0.5
    # 1, 2, 4 s, then the longest back-off (4 s here), until no element is left to carry one
    assert sent_at == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0, 23.0, 27.0]
    assert not parking.owes("web")


async def test_a_probe_in_flight_holds_the_carriers_back_until_its_outcome(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", str(OPEN))
    await state.park(2, "web", str(OPEN))
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 30.0
    await requeue.round()  # the carrier: it becomes the breaker's probe, and the channel hangs
    probing = ChannelCircuitOpen("channel web: circuit open after 5 failures", retry_after=1.0, probing=True)
    for _ in range(10):  # stories meet the breaker while the probe runs, each told "1 s"
        clock.now += 1.0
        parking.circuit_open("web", probing)
        await requeue.round()
    assert len(transport.sent) == 1  # its outcome is the news: no carrier a second while stories meet it
    clock.now += 1.0  # no story came since: the carrier back-off (1 s) governs again
    await requeue.round()
    assert len(transport.sent) == 2


async def test_with_nothing_parked_a_due_carrier_ends_what_this_worker_held(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    clock.now += 30.0
    requeue = ParkedRequeue(parking, state=state, transport=FakeTransport([]), channels=["web"], clock=clock)
    await requeue.round()  # another worker requeued them all meanwhile
    assert not parking.owes("web") and parking.next_due() is None
    assert parking.admit("web") is Admission.GO


async def test_a_suspicion_with_nothing_left_parked_is_dropped(state: MemoryStateStore, clock: ManualClock) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    await parking.load()
    await state.unpark(1, "web")  # another worker requeued it
    requeue = ParkedRequeue(parking, state=state, transport=FakeTransport([]), channels=["web"], clock=clock)
    await requeue.round()
    assert not parking.refusing("web") and parking.admit("web") is Admission.GO


async def test_a_refusal_while_down_means_the_channel_answers_and_the_refusal_governs(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    parking.refused("web", Admission.GO, REFUSED)
    assert parking.refusing("web") and not parking.owes("web")
    assert parking.next_due() == pytest.approx(1.0)  # the refusal's first trial, not the breaker's cool-down


async def test_an_inconclusive_trial_of_a_refusing_channel_lets_a_message_try_at_once_but_paces_the_carriers(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        await state.park(element_id, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.refused("web", Admission.GO, REFUSED)  # confirmed; then the channel goes down
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 1.0
    await requeue.round()
    assert len(transport.sent) == 1
    parking.inconclusive("web", parking.admit("web"))  # the carrier's trial met the channel down
    assert parking.refusing("web") and parking.admit("web") is Admission.TRIAL  # a message may try at once
    parking.inconclusive("web", Admission.TRIAL)
    clock.now += 1.0
    await requeue.round()
    assert len(transport.sent) == 1  # but not one carrier a second: the back-off doubled with each
    clock.now += 3.0
    await requeue.round()
    assert len(transport.sent) == 2


async def test_a_suspected_refusal_whose_trial_says_nothing_lets_every_call_through_and_owes_the_parked(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    await parking.load()
    parking.inconclusive("web", parking.admit("web"))  # the start-up trial met the channel down
    assert not parking.refusing("web") and parking.owes("web")
    assert parking.admit("web") is Admission.GO  # not held back: its breaker decides
    parking.accepted("web", Admission.GO)
    assert parking.requeue_due == {"web"}


async def test_a_park_written_while_the_channel_recovers_is_requeued(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", str(OPEN))
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    gate = asyncio.Event()
    original = state.park

    async def slow_park(element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        await gate.wait()
        await original(element_id, channel, reason, since=since)

    state.park = slow_park  # type: ignore[method-assign]
    writing = asyncio.ensure_future(parking.park(2, "web", str(OPEN)))
    await asyncio.sleep(0)
    parking.accepted("web", Admission.GO)  # the probe succeeded while element 2's park was being written
    requeue = ParkedRequeue(parking, state=state, transport=(transport := FakeTransport([])), channels=["web"])
    await requeue.round()  # requeues element 1; element 2 is not written yet
    gate.set()
    await writing
    assert parking.requeue_due == {"web"}
    await requeue.round()
    assert sorted(json.loads(body)["id"] for body in transport.sent) == [1, 2]
    assert await parked_ids(state, "web") == []


async def test_a_carrier_accepted_by_a_worker_that_held_nothing_requeues_there(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    await state.park(1, "web", str(OPEN))
    await state.park(2, "web", str(OPEN))
    engine = engine_with(kordiam, state, clock, (ScriptedChannel("web"), WEB))
    await engine.sync(Notification(1, carrier=True))
    assert engine.parking.requeue_due == {"web"}
    await engine.sync(Notification(1, carrier=False))
    other = engine_with(kordiam, MemoryStateStore(), clock, (ScriptedChannel("web"), WEB))
    await other.sync(Notification(1))
    assert other.parking.requeue_due == set()  # an ordinary story's success says nothing of others' parking


async def test_a_recovered_channels_requeue_stops_when_it_goes_down_again(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in range(1, 13):
        await state.park(element_id, "web", str(OPEN))
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.circuit_open("web", OPEN)
    parking.accepted("web", Admission.GO)
    assert parking.requeue_due == {"web"} and not parking.owes("web")

    class DownAgainAfterTwo(FakeTransport):
        async def send(
            self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None
        ) -> str:
            sent = await super().send(body, attributes, group_id=group_id)
            if len(self.sent) == 2:
                parking.circuit_open("web", OPEN)
            return sent

    await ParkedRequeue(parking, state=state, transport=DownAgainAfterTwo([]), channels=["web"]).round()
    # The batch under way when it went down is sent whole (its elements meet the open breaker and are parked
    # again); the next batch waits for the next recovery.
    assert await parked_ids(state, "web") == [11, 12]


async def test_a_covered_parked_requeue_hands_its_probe_to_a_carrier_at_once(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # `parked requeue --element 2` after the fix, while an editor's save of element 2 was synced first (its fetch
    # started after the requeue's notification came in, the breaker still open: parked again). The requeue's
    # notification is covered, so its call, the breaker's probe asked for at once, was never made, and no carrier
    # went before the hour-long cool-down the breaker had named.
    kordiam.elements[1] = element_body(1, publication(10, WEB))
    kordiam.elements[2] = element_body(2, publication(20, WEB))
    inner = ScriptedChannel("web")
    inner.fail = ChannelUnavailable("web: HTTP 503")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    transport = FakeTransport([])
    requeue = ParkedRequeue(engine.parking, state=state, transport=transport, channels=["web"], clock=clock)
    await engine.sync(Notification(1))  # opens the breaker for an hour: parked
    await engine.sync(Notification(2))  # parked
    inner.fail = None  # fixed; the operator requeues element 2 (the command unparks it once sent)
    calls = len(inner.upserts)
    await state.unpark(2, "web")
    received = time.monotonic() - 1.0
    await engine.sync(Notification(2))  # the editor's save, fetched after the requeue came in: parked again
    assert await parked_ids(state, "web") == [1, 2]

    covered = await engine.sync(Notification(2, try_now=frozenset({"web"})), received_at=received)
    assert covered.covered and len(inner.upserts) == calls

    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]  # the carrier takes the probe at once
    assert transport.attributes[0]["source"] == "parked-trial"
    carried = await engine.sync(Notification(1, carrier=True))
    assert [a.action for a in carried.actions] == [Action.CREATED]
    assert engine.parking.requeue_due == {"web"}


async def test_a_covered_parked_requeue_of_a_refusing_channel_wakes_the_requeue_task_for_its_trial(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # As above, for refused credentials and a cover another worker's fetch gave (the element's mark): the trial
    # asked for at once was due, but nothing woke the requeue task, which slept out its round (up to 30 s).
    kordiam.elements[2] = element_body(2, publication(20, WEB))
    web = ScriptedChannel("web")
    web.fail = REFUSED
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(2))  # refused: parked
    other_worker = engine_with(kordiam, state, clock, (web, WEB))
    sent_at = time.time() - 60.0  # the requeue's notification, sent a minute before the other worker's fetch
    await other_worker.sync(Notification(2))  # refused there too: parked again
    engine.parking.changed.clear()

    covered = await engine.sync(Notification(2, try_now=frozenset({"web"})), sent_at=sent_at)
    assert covered.covered
    assert engine.parking.changed.is_set() and engine.parking.carrier_due("web")


async def test_a_publication_moved_off_a_down_channel_is_not_fed_back_as_that_channels_item(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Moved from the web to print while the web was down: the web's retraction was parked (its item and delivery
    # stay for the requeue), yet the feedback took the parked delivery for the publication's and wrote the web's
    # item back to Kordiam right after clearing it, over print's, on every sync until the web healed.
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    engine = engine_with(kordiam, state, clock, (web, WEB), (paper, PRINT))
    await engine.sync(Notification(1))
    assert kordiam.elements[1]["publications"][0]["externalId"] == "web-1-11"
    web.fail = OPEN
    kordiam.elements[1]["publications"][0]["platform"] = {"id": PRINT}
    kordiam.writes.clear()

    report = await engine.sync(Notification(1))

    assert {(a.channel, a.action) for a in report.actions} == {("web", Action.PARKED), ("print", Action.CREATED)}
    assert kordiam.elements[1]["publications"][0]["externalId"] == "print-1-11"
    assert not any(body and body.get("externalId") == "web-1-11" for _, _, body in kordiam.writes)
    assert (1, "web", 11) in state.rows  # the web's item is retracted once it heals

    web.fail = None  # healed: the requeued element retracts the web's item, and Kordiam keeps print's
    await engine.sync(Notification(1))
    assert web.deletes == ["web-1-11"] and (1, "web", 11) not in state.rows
    assert kordiam.elements[1]["publications"][0]["externalId"] == "print-1-11"


async def test_a_parked_requeue_whose_element_needs_no_call_hands_its_probe_to_a_carrier(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # `parked requeue --element 2` after the fix, element 2 already written by a worker that saw the channel up:
    # its sync finds the web's item current and makes no call, so the probe asked for at once waited an hour.
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    inner = ScriptedChannel("web")
    web = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=3600.0)
    engine = engine_with(kordiam, state, clock, (web, WEB))
    transport = FakeTransport([])
    requeue = ParkedRequeue(engine.parking, state=state, transport=transport, channels=["web"], clock=clock)
    await engine.sync(Notification(2))  # written while the web was up
    inner.fail = ChannelUnavailable("web: HTTP 503")
    await engine.sync(Notification(1))  # opens the breaker for an hour: parked
    await engine.sync(Notification(3))  # parked
    await state.park(2, "web", str(OPEN))  # by another worker, before the item was written there
    inner.fail = None  # fixed; the operator requeues element 2 (the command unparks it once sent)
    await state.unpark(2, "web")

    report = await engine.sync(Notification(2, try_now=frozenset({"web"})))
    assert [a.action for a in report.actions] == [Action.UNCHANGED]

    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]  # the carrier takes the probe at once
