"""Kordiam's feedback writes failing for every element while its reads answer: once the feedback's breaker opens,
the element is parked for ``kordiam-feedback`` (its channels written and recorded) instead of retried through the
queue, and requeued once a feedback write succeeds again (bridge.pipeline.sync, bridge.pipeline.parking)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.config import KORDIAM_FEEDBACK, FeedbackSettings, Settings
from bridge.errors import KordiamUnavailable
from bridge.pipeline.notification import Notification
from bridge.pipeline.parking import ChannelParking
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import FEEDBACK_BREAKER_THRESHOLD, Action, SyncEngine, SyncFailed
from bridge.retry import RetryPolicy
from tests.unit.fakes import FakeKordiam, ManualClock, MemoryStateStore, ScriptedChannel, element_body, publication

WEB = 99003
PARKED_AT = datetime(2026, 12, 7, tzinfo=UTC)
ONE_ATTEMPT = RetryPolicy(attempts=1)


def engine_for(kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, web: ScriptedChannel) -> SyncEngine:
    return SyncEngine(
        kordiam=kordiam.client(ONE_ATTEMPT),  # one attempt per write: each failing status is one failed write
        routes=[Route(web, frozenset({WEB}))],
        state=state,
        feedback=FeedbackSettings(),
        main_channel=web.name,
        parking=ChannelParking(state, [web.name, KORDIAM_FEEDBACK], clock=clock),
    )


def stories(kordiam: FakeKordiam, count: int) -> list[int]:
    ids = list(range(1, count + 1))
    for element_id in ids:
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    return ids


async def writes_down_until_the_breaker_opens(
    kordiam: FakeKordiam, engine: SyncEngine, ids: list[int]
) -> list[type[BaseException] | None]:
    """Sync each element while every feedback write answers 503; what each sync raised (None: it returned)."""
    kordiam.failing_writes = [503] * 100
    raised: list[type[BaseException] | None] = []
    for element_id in ids:
        try:
            await engine.sync(Notification(element_id))
        except SyncFailed as failed:
            assert [(f.stage, type(f.error)) for f in failed.failures] == [("feedback", KordiamUnavailable)]
            raised.append(SyncFailed)
        else:
            raised.append(None)
    return raised


async def test_writes_failing_for_every_element_park_the_feedback_from_the_failure_that_opens_the_breaker(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 2)

    with capture_logs() as lines:
        raised = await writes_down_until_the_breaker_opens(kordiam, engine, ids)

    # Before the breaker opens each failure is the message's (retried); the one that opens it, and every sync that
    # meets it open, parks the element: the message is done, its channel item written once and recorded.
    assert raised == [SyncFailed] * (FEEDBACK_BREAKER_THRESHOLD - 1) + [None] * 3
    assert sorted(p.element_id for p in await state.parked(KORDIAM_FEEDBACK)) == ids[FEEDBACK_BREAKER_THRESHOLD - 1 :]
    assert len(web.upserts) == len(ids)
    assert len(kordiam.failing_writes) == 100 - FEEDBACK_BREAKER_THRESHOLD  # the open breaker's syncs wrote nothing
    assert engine.parking.owes(KORDIAM_FEEDBACK)
    assert "channel_down_parking" in [line["event"] for line in lines]


async def test_a_failed_probe_parks_its_element_and_a_successful_one_requeues_the_parked(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No cool-down: the next feedback after the breaker opens is its probe.
    monkeypatch.setattr("bridge.pipeline.sync.FEEDBACK_BREAKER_COOLDOWN", 0.0)
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 2)
    await writes_down_until_the_breaker_opens(kordiam, engine, ids[:FEEDBACK_BREAKER_THRESHOLD])

    # The probe fails: before, its message spent a receive on each failed probe and could be dead-lettered so.
    report = await engine.sync(Notification(ids[-2]))
    assert (KORDIAM_FEEDBACK, 0, Action.PARKED) in {(a.channel, a.publication_id, a.action) for a in report.actions}

    kordiam.failing_writes = []  # Kordiam takes writes again
    report = await engine.sync(Notification(ids[-1]))
    assert report.feedback  # the probe's writes went through
    assert KORDIAM_FEEDBACK in engine.parking.requeue_due
    assert not engine.parking.owes(KORDIAM_FEEDBACK)


async def test_a_sync_with_no_feedback_to_write_is_not_parked_while_the_breaker_is_open(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 1)
    synced_before = ids[-1]
    await engine.sync(Notification(synced_before))  # its feedback written while Kordiam took writes
    await writes_down_until_the_breaker_opens(kordiam, engine, ids[:-1])

    kordiam.elements[synced_before]["title"] = "Edited"  # a change its channel takes, and the feedback holds
    report = await engine.sync(Notification(synced_before))

    assert [(a.channel, a.action) for a in report.actions] == [("web", Action.UPDATED)]
    assert synced_before not in [p.element_id for p in await state.parked(KORDIAM_FEEDBACK)]


async def test_writes_kordiam_refuses_say_nothing_of_its_health_and_never_open_the_breaker(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 2)
    kordiam.failing_writes = [400] * 100
    for element_id in ids:
        with pytest.raises(SyncFailed):  # each the message's own failure: dead-lettered with its reason
            await engine.sync(Notification(element_id))
    assert await state.parked(KORDIAM_FEEDBACK) == []
    assert not engine.parking.owes(KORDIAM_FEEDBACK)


def test_no_channel_may_take_the_name_the_feedback_is_parked_under() -> None:
    with pytest.raises(ValidationError, match="the name Kordiam's feedback is parked under"):
        Settings(
            queue={"url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q"},
            kordiam={"base_url": "https://api.kordiam.app", "client_id": "c", "client_secret": "s3cret-value"},
            channels=[{"name": KORDIAM_FEEDBACK, "type": "folder", "platforms": [WEB], "path": "/tmp/web"}],
        )


async def test_an_operators_requeue_naming_the_feedback_lets_its_write_probe_kordiam_at_once(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 1)
    await writes_down_until_the_breaker_opens(kordiam, engine, ids[:-1])  # open for 30 s
    kordiam.failing_writes = []

    # `parked requeue --channel kordiam-feedback` after Kordiam's writes came back: no wait for the cool-down.
    report = await engine.sync(Notification(ids[-1], try_now=frozenset({KORDIAM_FEEDBACK})))

    assert report.feedback and KORDIAM_FEEDBACK in engine.parking.requeue_due


async def test_a_carrier_whose_feedback_kordiam_took_requeues_the_feedbacks_parked_elements_here(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Another worker parked elements for the feedback and sent this carrier; it cannot hear that it went through.
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    first, second = stories(kordiam, 2)
    await engine.sync(Notification(first, carrier=True, parked_since={"web": PARKED_AT}))
    assert KORDIAM_FEEDBACK not in engine.parking.requeue_due  # a channel's carrier: its feedback is no news
    await engine.sync(Notification(second, carrier=True, parked_since={KORDIAM_FEEDBACK: PARKED_AT}))
    assert KORDIAM_FEEDBACK in engine.parking.requeue_due


async def test_a_probe_cancelled_mid_write_does_not_hold_the_next_probe_back(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.pipeline.sync.FEEDBACK_BREAKER_COOLDOWN", 0.0)
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 2)
    await writes_down_until_the_breaker_opens(kordiam, engine, ids[:FEEDBACK_BREAKER_THRESHOLD])
    kordiam.failing_writes = []

    async def cancelled(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError  # the worker's shutdown, mid-probe

    with monkeypatch.context() as patched:
        patched.setattr(engine._kordiam, "update_publication", cancelled)
        with pytest.raises(asyncio.CancelledError):
            await engine.sync(Notification(ids[-2]))
    report = await engine.sync(Notification(ids[-1]))

    assert report.feedback  # let through as the probe, not parked behind one marked in flight for ever


async def test_a_resync_whose_feedback_is_parked_rewrote_every_channel_and_clears_the_token(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # The token says a channel may hold an older version (a sync lost its lease); a re-sync that rewrote every
    # channel made that good, whether or not Kordiam took its feedback: the requeue need not rewrite them again.
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD + 1)
    resynced = ids[-1]
    await writes_down_until_the_breaker_opens(kordiam, engine, ids[:-1])
    kordiam.failing_writes = []
    await engine.sync(Notification(resynced))  # parked: it wrote nothing to Kordiam
    state.marks[resynced] = replace(state.marks[resynced], resync="token-1")
    kordiam.elements[resynced]["title"] = "Edited"

    report = await engine.sync(Notification(resynced))

    assert {(a.channel, a.action) for a in report.actions} == {
        ("web", Action.UPDATED),
        (KORDIAM_FEEDBACK, Action.PARKED),
    }
    assert state.marks[resynced].resync is None


async def test_one_elements_writes_failing_again_and_again_never_open_the_breaker(
    kordiam: FakeKordiam, state: MemoryStateStore, clock: ManualClock
) -> None:
    # Kordiam cannot take one element's writes: its retries are its own failure (dead-lettered once they are spent),
    # and do not park every other element's feedback behind a breaker it opened alone.
    web = ScriptedChannel("web")
    engine = engine_for(kordiam, state, clock, web)
    ids = stories(kordiam, FEEDBACK_BREAKER_THRESHOLD)
    raised = await writes_down_until_the_breaker_opens(kordiam, engine, [ids[0]] * (FEEDBACK_BREAKER_THRESHOLD + 2))
    assert raised == [SyncFailed] * (FEEDBACK_BREAKER_THRESHOLD + 2)
    assert not engine.parking.owes(KORDIAM_FEEDBACK)

    # The feedback of as many different elements failing is Kordiam's writes down: the last of them is parked.
    assert await writes_down_until_the_breaker_opens(kordiam, engine, ids[1:]) == [SyncFailed] * 3 + [None]
