"""A channel that refuses the bridge's own credentials: the element is parked for it, never dead-lettered; while it
refuses, one trial call per back-off; once accepted, its parked elements are requeued (bridge.pipeline.parking)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs
from yarl import URL

from bridge import redaction
from bridge.channels.base import Channel, ChannelResult
from bridge.channels.http_errors import http_error
from bridge.channels.newsml.targets import s3_error
from bridge.config import FeedbackSettings
from bridge.errors import ChannelCircuitOpen, ChannelCredentialsRefused, ChannelRejected, ChannelUnavailable
from bridge.http import HttpRequest, HttpResponse
from bridge.kordiam.models import Element, Publication
from bridge.ops import metrics
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.notification import Notification, decode_notification, resync_notification
from bridge.pipeline.parking import TRIAL_TIMEOUT_SECONDS, Admission, ChannelParking, ParkedRequeue
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import Action, SyncEngine, SyncFailed
from bridge.queue.outcome import Done
from bridge.queue.send_batcher import SendBatcher, SendRejected
from bridge.queue.transport import QueueMessage
from bridge.state.base import StateUnavailable
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

WEB, PRINT = 99003, 99004
REFUSED = ChannelCredentialsRefused("web: HTTP 401 invalid api key — check api_key")
OPEN = ChannelCircuitOpen("channel web: circuit open after 5 failures", retry_after=30.0)


def engine_with(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, *channels: tuple[Channel, int]
) -> SyncEngine:
    parking = ChannelParking(state, [channel.name for channel, _ in channels], clock=clock)
    return SyncEngine(
        kordiam=kordiam.client(),
        routes=[Route(channel, frozenset({platform})) for channel, platform in channels],
        state=state,
        feedback=FeedbackSettings(),
        main_channel=channels[0][0].name,
        parking=parking,
    )


async def refused_on_the_first_of_two(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> tuple[SyncEngine, ScriptedChannel]:
    """Elements 1 and 2 on the web, whose channel refused the bridge's credentials on element 1's sync."""
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    kordiam.elements[2] = element_body(2, publication(21, WEB))
    web = ScriptedChannel("web")
    web.fail = REFUSED
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))
    return engine, web


def count_calls(channel: ScriptedChannel) -> list[int]:
    """The element ids of every upsert the channel gets from now on, refused or not."""
    calls: list[int] = []
    original = channel.upsert

    async def counting(element: Any, publication: Any, external_id: str | None) -> Any:
        calls.append(element.id)
        return await original(element, publication, external_id)

    channel.upsert = counting  # type: ignore[method-assign]
    return calls


async def parked_ids(state: MemoryStateStore, channel: str) -> list[int]:
    return [parked.element_id for parked in await state.parked(channel, limit=1000)]


async def test_a_refused_channel_parks_the_element_and_the_rest_of_the_sync_goes_on(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    web.fail = REFUSED
    engine = engine_with(kordiam, state, clock, (web, WEB), (paper, PRINT))
    refusals = metrics.CHANNEL_ERRORS.labels("web", "credentials_refused")
    before = refusals._value.get()

    report = await engine.sync(Notification(1))  # no SyncFailed: the refusal is not the message's failure

    assert {(a.channel, a.publication_id, a.action) for a in report.actions} == {
        ("web", 11, Action.PARKED),
        ("print", 12, Action.CREATED),
    }
    assert await parked_ids(state, "web") == [1] and await parked_ids(state, "print") == []
    parked = (await state.parked("web"))[0]
    assert "HTTP 401" in parked.reason
    assert set(state.rows) == {(1, "print", 12)}  # nothing recorded for the refusing channel
    assert engine.parking.refusing("web") and not engine.parking.refusing("print")
    # A failed write all the same (status and the error alerts count it), of its own kind.
    assert refusals._value.get() == before + 1


async def test_while_refused_the_channel_is_not_called_until_the_back_off_allows_one_trial(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    web = ScriptedChannel("web")
    web.fail = REFUSED
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))
    calls = 0

    original = web.upsert

    async def counting(element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        nonlocal calls
        calls += 1
        return await original(element, publication, external_id)

    web.upsert = counting  # type: ignore[method-assign]
    report = await engine.sync(Notification(2))
    assert calls == 0  # parked without a call: a wrong secret is not tried again for every story
    assert [a.action for a in report.actions] == [Action.PARKED]

    clock.now += 1.0  # the first back-off (1 s) has passed: one trial, still refused
    await engine.sync(Notification(3))
    assert calls == 1
    assert await parked_ids(state, "web") == [1, 2, 3]
    assert engine.parking.admit("web") is Admission.PARK  # the back-off doubled: 2 s from now
    clock.now += 1.9
    assert engine.parking.admit("web") is Admission.PARK
    clock.now += 0.2
    assert engine.parking.admit("web") is Admission.TRIAL
    assert engine.parking.admit("web") is Admission.PARK  # one trial at a time


async def test_an_element_requeued_to_carry_a_trial_and_parked_again_keeps_the_time_it_was_first_parked(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # `parked list` shows how long a story has waited for the channel, not how long since its last trial.
    engine, _ = await refused_on_the_first_of_two(kordiam, state, clock)
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    state.parks[("web", 1)] = replace(state.parks[("web", 1)], since=hours_ago)
    transport = FakeTransport([])
    requeue = ParkedRequeue(engine.parking, state=state, transport=transport, channels=["web"], clock=clock)
    clock.now += 1.0
    await requeue.round()  # the carrier goes: element 1, unparked once the queue has it
    assert await parked_ids(state, "web") == []
    carrier = decode_notification(transport.sent[0], transport.attributes[0])
    assert carrier.carrier and carrier.parked_since == {"web": hours_ago}

    await engine.sync(carrier)  # its trial: still refused, so parked again
    [again] = await state.parked("web")
    assert (again.element_id, again.since) == (1, hours_ago)


async def test_a_requeue_by_hand_that_names_the_channel_tries_it_at_once_and_only_once(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # An operator fixed the secret and ran `parked requeue`: its first notification for the channel names it
    # (try-channels), and a worker holding the channel back tries it now, not at its next trial (up to 5 minutes).
    engine, web = await refused_on_the_first_of_two(kordiam, state, clock)
    calls = count_calls(web)
    clock.now += 0.5  # the next trial is 0.5 s away
    await engine.sync(Notification(2))
    assert calls == []  # held back: parked without a call

    web.fail = None  # the secret was fixed
    body, attributes = resync_notification(1, source="parked-requeue", try_now=["web"])
    asked = decode_notification(body, attributes)
    assert asked.try_now == frozenset({"web"})
    with capture_logs() as lines:
        report = await engine.sync(asked)
    assert [a.action for a in report.actions] == [Action.CREATED] and calls == [1]
    assert not engine.parking.refusing("web") and "web" in engine.parking.requeue_due
    assert [line["event"] for line in lines if "trial" in line["event"] or "accepted" in line["event"]] == [
        "parked_trial_asked",
        "channel_credentials_accepted",
    ]


async def test_a_requeue_by_hand_of_a_channel_still_refusing_costs_one_trial_not_one_per_element(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    engine, web = await refused_on_the_first_of_two(kordiam, state, clock)
    calls = count_calls(web)
    for element_id in (3, 4, 5):
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10 + 1, WEB))
    notifications = [Notification(1, try_now=frozenset({"web"}))]  # only the first names the channel
    notifications += [Notification(element_id) for element_id in (2, 3, 4, 5)]
    for notification in notifications:
        await engine.sync(notification)
    assert calls == [1]  # the one trial asked for; the other four parked without a call
    assert engine.parking.refusing("web") and await parked_ids(state, "web") == [1, 2, 3, 4, 5]
    assert engine.parking.admit("web") is Admission.PARK  # the back-off starts again from 1 s, doubled: 2 s


async def test_an_accepted_trial_reopens_the_channel_and_asks_for_its_parked_elements_to_be_requeued(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    engine, web = await refused_on_the_first_of_two(kordiam, state, clock)

    web.fail = None  # the secret was fixed at the target
    clock.now += 1.0
    report = await engine.sync(Notification(2))
    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.CREATED)]
    assert not engine.parking.refusing("web")
    assert engine.parking.requeue_due == {"web"}
    assert engine.parking.admit("web") is Admission.GO


async def test_a_trial_that_says_nothing_about_the_credentials_is_the_channels_failure_and_frees_the_next_trial(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    engine, web = await refused_on_the_first_of_two(kordiam, state, clock)

    web.fail = ChannelUnavailable("web down")
    clock.now += 1.0
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(2))
    assert [(f.stage, type(f.error)) for f in raised.value.failures] == [("web", ChannelUnavailable)]
    assert engine.parking.refusing("web")
    assert engine.parking.admit("web") is Admission.TRIAL  # no verdict: the next call may try at once


@pytest.mark.parametrize("error", [REFUSED, OPEN], ids=["refused", "circuit-open"])
async def test_a_retraction_on_a_refusing_or_down_channel_parks_the_element_and_keeps_its_delivery(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, error: ChannelRejected | ChannelUnavailable
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = FindingChannel("web")
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))
    del kordiam.elements[1]  # the story is deleted in Kordiam
    web.fail = error

    report = await engine.sync(Notification(1))

    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.PARKED)]
    assert web.finds == []  # not searched either: the requeued sync does both
    assert set(state.rows) == {(1, "web", 11)}  # kept: the requeued sync retracts it
    assert await parked_ids(state, "web") == [1]


@pytest.mark.parametrize("error", [REFUSED, OPEN], ids=["refused", "circuit-open"])
async def test_the_handler_settles_a_message_whose_only_trouble_is_a_refusing_or_down_channel_as_done(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, error: ChannelRejected | ChannelUnavailable
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    web.fail = error
    handler = MessageHandler(engine_with(kordiam, state, clock, (web, WEB)), tracing=False)
    # Even on a message's last receive (10, the default budget): neither costs it its life.
    outcome = await handler(QueueMessage("m1", "r1", json.dumps({"id": 1}), {}, 10, None, None))
    assert isinstance(outcome, Done)
    assert await parked_ids(state, "web") == [1]


async def test_load_starts_a_channel_with_parked_elements_refused_with_a_trial_due_at_once(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(7, "web", "HTTP 401")
    parking = ChannelParking(state, ["web", "print"], clock=clock)
    await parking.load()
    assert parking.refusing("web") and not parking.refusing("print")
    assert parking.carrier_due("web")
    assert parking.admit("web") is Admission.TRIAL


async def test_requeue_sends_every_parked_element_of_an_accepted_channel_and_unparks_each(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in range(1, 251):
        await state.park(element_id, "web", "HTTP 401")
    await state.park(900, "print", "HTTP 401")
    parking = ChannelParking(state, ["web", "print"], clock=clock)
    await parking.load()
    assert parking.admit("web") is Admission.TRIAL
    parking.accepted("web", Admission.TRIAL)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web", "print"])

    await requeue.round()

    web_sent = [json.loads(body)["id"] for body in transport.sent if json.loads(body)["id"] != 900]
    assert web_sent == list(range(1, 251))
    assert await state.parked_count("web") == 0
    assert parking.requeue_due == set()
    # print still refuses (not tried yet): one element goes out to carry its trial, and is unparked with it.
    assert [json.loads(body)["id"] for body in transport.sent].count(900) == 1
    assert await state.parked_count("print") == 0


async def test_a_trial_carrier_goes_out_once_per_back_off_while_no_message_tries_the_channel(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    for element_id in (1, 2, 3):
        await state.park(element_id, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.refused("web", Admission.GO, REFUSED)
    transport = FakeTransport([])
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"])

    await requeue.round()
    assert transport.sent == []  # the first trial is 1 s away
    clock.now += 1.0
    await requeue.round()
    await requeue.round()
    assert [json.loads(body)["id"] for body in transport.sent] == [1]  # one carrier, not one per round
    assert await parked_ids(state, "web") == [2, 3]


async def test_a_failed_send_leaves_the_element_parked(state: MemoryStateStore, clock: ManualClock) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    await parking.load()
    parking.accepted("web", parking.admit("web"))

    class Down(FakeTransport):
        async def send(
            self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None
        ) -> str:
            raise ConnectionError("queue unreachable")

    requeue = ParkedRequeue(parking, state=state, transport=Down([]), channels=["web"])
    with pytest.raises(ConnectionError):
        await requeue.round()
    assert await parked_ids(state, "web") == [1]
    assert parking.requeue_due == {"web"}  # tried again on the next round


def answer(status: int, body: object) -> HttpResponse:
    request = HttpRequest("PUT", URL("https://cms.test/x"), CIMultiDict(), None, 5.0)
    return HttpResponse(status, CIMultiDictProxy(CIMultiDict()), json.dumps(body).encode(), request)


def test_a_401_is_a_credentials_refusal_and_a_403_a_rejection_only() -> None:
    refused = http_error(answer(401, {"message": "bad key"}), "cms", "updating", refused="check api_key")
    forbidden = http_error(answer(403, {"message": "may not edit"}), "cms", "updating", refused="check api_key")
    assert isinstance(refused, ChannelCredentialsRefused) and "check api_key" in str(refused)
    assert isinstance(forbidden, ChannelRejected) and not isinstance(forbidden, ChannelCredentialsRefused)


@pytest.mark.parametrize(
    ("code", "refused"),
    [("InvalidAccessKeyId", True), ("SignatureDoesNotMatch", True), ("ExpiredToken", True), ("AccessDenied", False)],
)
def test_s3_codes_that_do_not_authenticate_the_bridge_are_refusals(code: str, refused: bool) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Put")
    mapped = s3_error(error, "newsml", "writing")
    assert isinstance(mapped, ChannelRejected)
    assert isinstance(mapped, ChannelCredentialsRefused) is refused


def test_a_trial_never_reported_holds_the_next_one_back_only_until_it_times_out(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.refused("web", Admission.GO, REFUSED)
    clock.now += 1.0
    assert parking.admit("web") is Admission.TRIAL  # and then never reported (its call was cancelled)
    clock.now += 300.0
    assert parking.admit("web") is Admission.PARK
    clock.now += TRIAL_TIMEOUT_SECONDS
    assert parking.admit("web") is Admission.TRIAL


def test_a_call_admitted_before_the_refusal_and_accepted_after_it_does_not_reopen_the_channel(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # Two calls under way at once: one meets the refusal, the other (let through before it) is answered after it.
    # Only a trial speaks for the credentials now; otherwise every parked element is requeued into the refusal.
    parking = ChannelParking(state, ["web"], clock=clock)
    earlier = parking.admit("web")
    assert earlier is Admission.GO
    parking.refused("web", Admission.GO, REFUSED)
    parking.accepted("web", earlier)
    assert parking.refusing("web")
    assert parking.requeue_due == set()


async def test_a_moved_publication_on_a_refusing_channel_is_parked_and_kordiam_keeps_pointing_at_the_kept_item(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))
    item = state.rows[(1, "web", 11)].external_id
    assert kordiam.elements[1]["publications"][0]["externalId"] == item
    kordiam.elements[1] = element_body(1, publication(11, 99005))  # moved to a platform no channel takes
    kordiam.elements[1]["publications"][0]["externalId"] = item
    engine.parking.refused("web", Admission.GO, REFUSED)
    kordiam.writes.clear()

    report = await engine.sync(Notification(1))

    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.PARKED)]
    # The item still stands: nothing of it is cleared (the feedback goes on naming the item it is kept at).
    assert not [write for write in kordiam.writes if "null" in json.dumps(write[2])]
    assert not [write for write in kordiam.writes if "unlink" in write[1]]
    assert web.deletes == [] and (1, "web", 11) in state.rows
    assert await parked_ids(state, "web") == [1]


async def test_a_restart_that_did_not_fix_the_secret_says_so_once_and_backs_off(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # A channel name of its own: the gauge lives in the process's one registry.
    await state.park(7, "cms", "HTTP 401")
    parking = ChannelParking(state, ["cms"], clock=clock)
    await parking.load()
    assert metrics.CHANNEL_CREDENTIALS_REFUSED.labels("cms")._value.get() == 0  # only suspected so far

    with capture_logs() as lines:
        parking.refused("cms", parking.admit("cms"), REFUSED)  # the start-up trial: still refused
        clock.now += 2.0
        parking.refused("cms", parking.admit("cms"), REFUSED)  # the next trial, 2 s later: refused again
    assert [line["event"] for line in lines if line["log_level"] == "error"] == ["channel_credentials_refused"]
    assert metrics.CHANNEL_CREDENTIALS_REFUSED.labels("cms")._value.get() == 1  # the alert's gauge
    assert parking.admit("cms") is Admission.PARK  # backed off to 4 s, not blocked by a trial left running
    clock.now += 4.0
    assert parking.admit("cms") is Admission.TRIAL


async def test_a_requeued_element_parked_again_before_its_unpark_stays_parked(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    await parking.load()
    parking.accepted("web", parking.admit("web"))

    class RefusedAtOnce(FakeTransport):
        """The queue, and a worker that takes the notification and meets a refusal before the unpark lands."""

        async def send(
            self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None
        ) -> str:
            sent = await super().send(body, attributes, group_id=group_id)
            await state.park(json.loads(body)["id"], "web", "HTTP 401 again")
            return sent

    await ParkedRequeue(parking, state=state, transport=RefusedAtOnce([]), channels=["web"]).round()
    assert await parked_ids(state, "web") == [1]  # not lost: the channel still owes it the sync


async def test_the_sweep_counts_parked_elements_and_takes_up_those_another_worker_parked(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # Channel names of their own: the gauge lives in the process's one registry.
    parking = ChannelParking(state, ["swept", "quiet"], clock=clock)
    await parking.load()  # nothing parked at start: counted, so the first sweep is a minute later
    requeue = ParkedRequeue(
        parking, state=state, transport=FakeTransport([]), channels=["swept", "quiet"], sweep_seconds=60.0, clock=clock
    )
    await requeue.round()
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("swept")._value.get() == 0

    await state.park(7, "swept", "HTTP 401")  # by another worker, which then stopped
    await state.park(8, "swept", "HTTP 401")
    clock.now += 59.0
    await requeue.round()
    assert not parking.refusing("swept")  # not before the minute is up: one count per channel a minute
    clock.now += 1.0
    with capture_logs() as lines:
        await requeue.round()
        await requeue.round()
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("swept")._value.get() == 2
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("quiet")._value.get() == 0
    # Owed here too, not held back: the next call this worker gets the channel to accept requeues them.
    assert parking.owes("swept") and not parking.owes("quiet") and parking.admit("swept") is Admission.GO
    assert [line["event"] for line in lines if line["event"].startswith("parked_")] == [
        "parked_found",
        "parked_trial_requeued",
    ]
    assert await parked_ids(state, "swept") == [8]  # the first went out at once to carry a call
    parking.accepted("swept", Admission.GO)  # a story's (or the carrier's) call succeeded
    await requeue.round()
    assert await parked_ids(state, "swept") == []


async def test_elements_parked_for_a_channel_no_longer_configured_are_counted_and_named_once(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # "renamed-web" was renamed in the configuration while it had parked elements: no call of it will ever succeed
    # here, so nothing requeues them; the gauge (and its alert) and one warning say so, and nothing is sent.
    await state.park(3, "renamed-web", "HTTP 401")
    await state.park(4, "renamed-web", "HTTP 401")
    await state.park(5, "gone-print", "circuit open")
    await state.unpark(5, "gone-print")  # parked under once, nothing left: no gauge, no warning
    parking = ChannelParking(state, ["kept"], clock=clock)
    transport = FakeTransport([])
    requeue = ParkedRequeue(
        parking, state=state, transport=transport, channels=["kept"], sweep_seconds=60.0, clock=clock
    )
    with capture_logs() as lines:
        await parking.load()
        clock.now += 60.0
        await requeue.round()  # the sweep: counted again, not told again
    warnings = [line for line in lines if line["event"] == "parked_for_unconfigured_channel"]
    assert [(w["channel"], w["parked"], w["log_level"]) for w in warnings] == [("renamed-web", 2, "warning")]
    assert "kordiam-bridge parked requeue --channel renamed-web" in warnings[0]["hint"]
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("renamed-web")._value.get() == 2
    assert "gone-print" not in {
        s.labels["channel"] for m in metrics.CHANNEL_PARKED_ELEMENTS.collect() for s in m.samples
    }
    assert not parking.holds("renamed-web") and transport.sent == []
    assert await parked_ids(state, "renamed-web") == [3, 4]

    await state.unpark(3, "renamed-web")  # an operator requeued them
    await state.unpark(4, "renamed-web")
    clock.now += 60.0
    await requeue.round()
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("renamed-web")._value.get() == 0  # the alert clears


async def test_a_failure_to_read_which_channels_have_parked_elements_does_not_stop_the_sweep(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    async def unreadable() -> list[str]:
        raise StateUnavailable("DynamoDB: ProvisionedThroughputExceededException")

    state.parked_channels = unreadable  # type: ignore[method-assign]
    await state.park(7, "sweep-kept", "HTTP 401")  # by another worker
    parking = ChannelParking(state, ["sweep-kept"], clock=clock)
    with capture_logs() as lines:
        counts = await parking.count_parked()
    assert counts == {"sweep-kept": 1}
    assert [line["event"] for line in lines] == ["parked_channels_unreadable"]


async def test_the_sweep_leaves_a_channel_this_worker_already_holds_alone(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    await state.park(1, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    parking.refused("web", Admission.GO, REFUSED)
    requeue = ParkedRequeue(
        parking, state=state, transport=FakeTransport([]), channels=["web"], sweep_seconds=0.5, clock=clock
    )
    clock.now += 0.5  # the sweep is due; the refusal's trial is not yet
    with capture_logs() as lines:
        await requeue.round()
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("web")._value.get() == 1  # it did sweep
    assert parking.reason("web").endswith(str(REFUSED)) and lines == []
    assert parking.admit("web") is Admission.PARK  # the sweep did not make its trial due at once


async def test_a_resync_that_parks_a_channel_keeps_the_token_so_the_requeue_rewrites_that_channel(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # A sync that lost its lease marked the element for a re-sync: the print item may hold an older version than its
    # delivery says. A re-sync that parks print did not rewrite it, so its mark must not clear the token: the
    # requeue after the secret is fixed is not forced, and print's delivery fingerprint would match the element.
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    engine = engine_with(kordiam, state, clock, (web, WEB), (paper, PRINT))
    await engine.sync(Notification(1))
    state.marks[1] = replace(state.marks[1], resync="token-1")

    paper.fail = REFUSED
    report = await engine.sync(Notification(1))
    assert {(a.channel, a.action) for a in report.actions} == {("web", Action.UPDATED), ("print", Action.PARKED)}
    assert state.marks[1].resync == "token-1"

    paper.fail = None  # the secret was fixed; the element is requeued, naming the channel
    body, attributes = resync_notification(1, source="parked-requeue", try_now=["print"])
    report = await engine.sync(decode_notification(body, attributes))
    assert ("print", Action.UPDATED) in {(a.channel, a.action) for a in report.actions}
    assert paper.upserts[-1] == (12, "print-1-12")  # the same item, rewritten
    assert state.marks[1].resync is None


async def test_a_parked_reason_carries_no_configured_secret(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # The refusal's text quotes another service's secret (not an HTTP answer this channel's request got).
    redaction.SECRETS.remember_secrets("other-SERVICE-secret")
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelCredentialsRefused("channel web: HTTP 401 key other-SERVICE-secret is not ours")
    await engine_with(kordiam, state, clock, (web, WEB)).sync(Notification(1))
    assert [p.reason for p in await state.parked("web")] == ["channel web: HTTP 401 key *** is not ours"]


async def test_an_element_parked_without_a_call_says_the_refusal_was_another_elements(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Seen by hand: `parked list` showed element 1006 as "… updating element 1002 as 5005: HTTP 401 …", another
    # element's error as if it were its own. An element parked without a call of its own says the channel refuses.
    engine, _ = await refused_on_the_first_of_two(kordiam, state, clock)
    await engine.sync(Notification(2))  # parked at once: the channel is not called again

    by_element = {parked.element_id: parked.reason for parked in await state.parked("web")}
    assert by_element[1] == str(REFUSED)  # its own call's refusal, as it came
    assert by_element[2] == f"channel web refuses the bridge's credentials; the last refusal: {REFUSED}"


async def test_an_element_parked_without_a_call_keeps_the_refusals_reason_without_a_configured_secret(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Element 2 meets the refusal element 1's call got, and is parked without a call, under the refusal's reason.
    redaction.SECRETS.remember_secrets("other-SERVICE-secret")
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    kordiam.elements[2] = element_body(2, publication(21, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelCredentialsRefused("channel web: HTTP 401 key other-SERVICE-secret is not ours")
    engine = engine_with(kordiam, state, clock, (web, WEB))
    await engine.sync(Notification(1))
    await engine.sync(Notification(2))
    own = "channel web: HTTP 401 key *** is not ours"
    kept = f"channel web refuses the bridge's credentials; the last refusal: {own}"
    assert [p.reason for p in await state.parked("web")] == [own, kept]


def test_the_lines_of_a_channel_taking_calls_again_quote_its_failure_without_a_configured_secret(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # Info lines are not searched for secrets: the reasons they quote must be stored without them.
    redaction.SECRETS.remember_secrets("other-SERVICE-secret")
    parking = ChannelParking(state, ["web", "print"], clock=clock)
    parking.circuit_open(
        "web", ChannelCircuitOpen("channel web: circuit open; the last: other-SERVICE-secret", retry_after=30.0)
    )
    parking.refused("print", parking.admit("print"), ChannelCredentialsRefused("print: 401 other-SERVICE-secret"))
    clock.now += 60.0
    with capture_logs() as lines:
        parking.accepted("web", Admission.GO)
        parking.accepted("print", parking.admit("print"))
    quoted = {line["event"]: line.get("parked_for") or line.get("refused_for") for line in lines}
    assert quoted == {
        "channel_recovered": "channel web: circuit open; the last: ***",
        "channel_credentials_accepted": "print: 401 ***",
    }


class Batching(FakeTransport):
    """Sends as ``SqsTransport`` does: concurrent sends share ``SendMessageBatch`` calls (``SendBatcher``), each
    counted; SQS refuses the entries whose element is in ``refused`` alone, and sends the rest of their batch."""

    def __init__(self, refused: set[int]) -> None:
        super().__init__([])
        self.refused = refused
        self.batch_calls: list[list[int]] = []
        self._batcher = SendBatcher(self._send_batch)

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        return await self._batcher.send({"MessageBody": body, "MessageAttributes": {}})

    async def _send_batch(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [json.loads(entry["MessageBody"])["id"] for entry in entries]
        self.batch_calls.append(ids)
        answered: dict[str, list[dict[str, str]]] = {"Successful": [], "Failed": []}
        for entry, element_id in zip(entries, ids, strict=True):
            if element_id in self.refused:
                answered["Failed"].append({"Id": entry["Id"], "Code": "KMS.Throttling"})
            else:
                answered["Successful"].append({"Id": entry["Id"], "MessageId": f"m-{element_id}"})
        return dict(answered)


async def test_a_requeue_sends_its_elements_in_batches_and_a_refused_entry_stays_parked_alone(
    state: MemoryStateStore, clock: ManualClock
) -> None:
    # 25 parked for a channel accepted again: three SendMessageBatch calls, not 25 one-message calls (each a round
    # trip, minutes for thousands). SQS refuses element 14 alone: the rest of its batch is on the queue and
    # unparked, 14 stays parked, and the batch after it (21..25) is not sent, for the next round.
    for element_id in range(1, 26):
        await state.park(element_id, "web", "HTTP 401")
    parking = ChannelParking(state, ["web"], clock=clock)
    await parking.load()
    parking.accepted("web", parking.admit("web"))
    transport = Batching(refused={14})
    requeue = ParkedRequeue(parking, state=state, transport=transport, channels=["web"])

    with pytest.raises(SendRejected):
        await requeue.round()
    assert transport.batch_calls == [list(range(1, 11)), list(range(11, 21))]
    assert await parked_ids(state, "web") == [14, *range(21, 26)]
    assert parking.requeue_due == {"web"}

    transport.refused.clear()
    await requeue.round()
    assert transport.batch_calls[2:] == [[14, 21, 22, 23, 24, 25]]
    assert await parked_ids(state, "web") == []
