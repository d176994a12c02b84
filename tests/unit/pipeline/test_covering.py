"""The covering rule at its edges: which notifications a fetch that already ran makes needless."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from bridge.config import FeedbackSettings
from bridge.errors import TransientError
from bridge.pipeline.covering import Fetched, FetchLedger
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.notification import Event, Notification
from bridge.pipeline.sync import SyncEngine, SyncFailed
from bridge.queue.consumer import Consumer, ConsumerSettings
from bridge.queue.slots import WorkSlots
from bridge.queue.transport import QueueMessage
from bridge.state import SqliteStateStore
from tests.unit.fakes import FakeTransport


def test_a_notification_sent_before_a_fetch_started_is_covered() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, Fetched(100.0))
    assert ledger.covers(7, sent_at=99.9)


def test_a_notification_sent_after_a_fetch_started_is_not_covered() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, Fetched(100.0))
    assert not ledger.covers(7, sent_at=100.1)
    assert not ledger.covers(7, sent_at=100.0)


def test_the_clock_skew_allowance_narrows_what_a_fetch_covers() -> None:
    ledger = FetchLedger(clock_skew=5.0)
    ledger.record(7, Fetched(100.0))
    assert not ledger.covers(7, sent_at=96.0)  # within the allowance: the fetching worker's clock may run ahead
    assert ledger.covers(7, sent_at=94.9)


def test_the_allowance_is_for_a_fetching_worker_whose_clock_runs_ahead_of_the_stamping_one() -> None:
    # In true time the notification was sent at 100 and the fetch started at 99: before it, so it must not cover.
    ledger = FetchLedger(clock_skew=5.0)
    ledger.record(7, Fetched(99.0 + 4.9))  # the worker's clock 4.9 s ahead of the queue's
    assert not ledger.covers(7, sent_at=100.0)
    ledger = FetchLedger(clock_skew=5.0)
    ledger.record(7, Fetched(99.0 - 60.0))  # the queue's clock a minute ahead: the fetch looks only earlier
    assert not ledger.covers(7, sent_at=100.0)
    ledger = FetchLedger(clock_skew=0.0)  # no allowance: a worker's clock ahead does cover it, wrongly
    ledger.record(7, Fetched(99.0 + 4.9))
    assert ledger.covers(7, sent_at=100.0)


def test_a_fetch_covers_only_its_own_element_and_never_an_unstamped_notification() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, Fetched(100.0))
    assert not ledger.covers(8, sent_at=1.0)
    assert not ledger.covers(7, sent_at=None)


def test_an_earlier_fetch_recorded_late_does_not_shrink_what_a_later_one_covers() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, Fetched(100.0))
    ledger.record(7, Fetched(50.0))
    assert ledger.covers(7, sent_at=99.0)


def test_a_notification_received_before_a_local_fetch_started_is_covered_whatever_the_skew() -> None:
    ledger = FetchLedger(clock_skew=3600.0)
    ledger.record(7, Fetched(100.0, local_start=50.0))
    assert ledger.covers(7, sent_at=100.0, received_at=49.9)  # received before the fetch started: sent before it
    assert not ledger.covers(7, sent_at=100.0, received_at=50.0)
    assert not ledger.covers(7, sent_at=None, received_at=50.1)


def test_another_workers_fetch_covers_only_by_the_broker_clock() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, Fetched(100.0))  # from the state store's mark: no local start
    assert not ledger.covers(7, sent_at=None, received_at=0.0)
    ledger.record(7, Fetched(90.0, local_start=50.0))  # an older local fetch keeps the newer wall start
    assert ledger.covers(7, sent_at=99.0, received_at=60.0)
    assert ledger.covers(7, sent_at=None, received_at=49.0)


def test_the_ledger_forgets_the_least_recently_recorded_element_beyond_its_capacity() -> None:
    ledger = FetchLedger(clock_skew=0.0, capacity=1)
    ledger.record(7, Fetched(100.0))
    ledger.record(8, Fetched(100.0))
    assert not ledger.covers(7, sent_at=1.0)  # forgotten: costs a fetch, never staleness
    assert ledger.covers(8, sent_at=1.0)


class CountingKordiam:
    """Answers every element as deleted (None), or fails while ``failing`` is set; counts the fetches. While
    ``held`` is clear a fetch waits for it, after setting ``fetching`` (a fetch in progress, for a test to act in)."""

    def __init__(self) -> None:
        self.fetches = 0
        self.failing = False
        self.fetching = asyncio.Event()
        self.held = asyncio.Event()
        self.held.set()

    async def get_element(self, element_id: int) -> None:
        self.fetches += 1
        self.fetching.set()
        await self.held.wait()
        if self.failing:
            self.failing = False  # only this fetch fails
            raise TransientError("Kordiam answered 503")


def engine(
    kordiam: CountingKordiam, store: SqliteStateStore, *, clock_skew: float = 0.0, slots: WorkSlots | None = None
) -> SyncEngine:
    return SyncEngine(
        kordiam=kordiam,  # type: ignore[arg-type]
        routes=[],
        state=store,
        feedback=FeedbackSettings(enabled=False),
        main_channel="folder",
        fetched=FetchLedger(clock_skew=clock_skew),
        slots=slots,
    )


async def test_a_delete_notification_sent_before_a_successful_fetch_is_acknowledged_without_a_fetch(
    store: SqliteStateStore,
) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store)
    first = await sync.sync(Notification(element_id=7), sent_at=0.0)
    assert first.deleted_element and not first.covered
    again = await sync.sync(Notification(element_id=7), sent_at=1.0)
    assert again.covered and kordiam.fetches == 1


async def test_a_failed_fetch_covers_nothing(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store)
    kordiam.failing = True
    with pytest.raises(SyncFailed):
        await sync.sync(Notification(element_id=7), sent_at=0.0)
    report = await sync.sync(Notification(element_id=7), sent_at=1.0)
    assert not report.covered and kordiam.fetches == 2


async def test_a_forced_replay_is_never_covered(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store)
    await sync.sync(Notification(element_id=7), sent_at=0.0)
    report = await sync.sync(Notification(element_id=7, force=True), sent_at=1.0)
    assert not report.covered and kordiam.fetches == 2


async def test_a_fetch_by_another_worker_covers_through_the_shared_store(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    first, second = engine(kordiam, store), engine(kordiam, store)  # two ledgers, one state store
    await first.sync(Notification(element_id=7), sent_at=0.0)
    mark = await store.element_mark(7)
    assert mark is not None and mark.fetched_at is not None
    report = await second.sync(Notification(element_id=7), sent_at=1.0)
    assert report.covered and kordiam.fetches == 1


async def test_a_notification_sent_after_the_stored_fetch_started_is_fetched(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    first, second = engine(kordiam, store), engine(kordiam, store)
    await first.sync(Notification(element_id=7), sent_at=0.0)
    mark = await store.element_mark(7)
    assert mark is not None and mark.fetched_at is not None
    report = await second.sync(Notification(element_id=7), sent_at=mark.fetched_at)
    assert not report.covered and kordiam.fetches == 2


async def test_a_failed_sync_on_another_worker_covers_nothing(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    first, second = engine(kordiam, store), engine(kordiam, store)
    kordiam.failing = True
    with pytest.raises(SyncFailed):
        await first.sync(Notification(element_id=7), sent_at=0.0)
    assert await store.element_mark(7) is None
    report = await second.sync(Notification(element_id=7), sent_at=1.0)
    assert not report.covered and kordiam.fetches == 2


# Notifications that wait together share the next fetch. They are sent "now", well within the clock-skew
# allowance, so only the rule by this worker's receive time can cover them (as in an editing burst).


async def test_notifications_waiting_together_share_one_fetch(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store, clock_skew=5.0)
    now, received = time.time(), time.monotonic()
    reports = await asyncio.gather(
        *(sync.sync(Notification(element_id=7), sent_at=now, received_at=received) for _ in range(10))
    )
    assert kordiam.fetches == 1
    assert sum(r.covered for r in reports) == 9


async def test_a_notification_received_while_its_element_is_fetched_leads_to_one_more_fetch(
    store: SqliteStateStore,
) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store, clock_skew=5.0)
    kordiam.held.clear()
    first = asyncio.create_task(
        sync.sync(Notification(element_id=7), sent_at=time.time(), received_at=time.monotonic())
    )
    await kordiam.fetching.wait()
    # Received after the fetch started: that fetch may predate the change, so these share the next one.
    during = [
        asyncio.create_task(sync.sync(Notification(element_id=7), sent_at=time.time(), received_at=time.monotonic()))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    kordiam.held.set()
    reports = [await first, *[await task for task in during]]
    assert kordiam.fetches == 2
    assert [r.covered for r in reports] == [False, False, True, True, True, True]


async def test_a_failed_shared_fetch_leaves_the_waiters_to_the_next_one(store: SqliteStateStore) -> None:
    kordiam = CountingKordiam()
    sync = engine(kordiam, store, clock_skew=5.0)
    kordiam.failing = True
    received = time.monotonic()
    results = await asyncio.gather(
        *(sync.sync(Notification(element_id=7), sent_at=time.time(), received_at=received) for _ in range(3)),
        return_exceptions=True,
    )
    assert isinstance(results[0], SyncFailed)
    assert [getattr(r, "covered", None) for r in results[1:]] == [False, True]
    assert kordiam.fetches == 2


async def test_a_delete_notification_received_before_the_fetch_that_found_the_element_gone_is_covered(
    store: SqliteStateStore,
) -> None:
    kordiam = CountingKordiam()  # answers the element as deleted
    sync = engine(kordiam, store, clock_skew=5.0)
    received = time.monotonic()
    first = await sync.sync(Notification(element_id=7, event=Event.DELETED), sent_at=time.time(), received_at=received)
    assert first.deleted_element
    again = await sync.sync(Notification(element_id=7, event=Event.DELETED), sent_at=time.time(), received_at=received)
    assert again.covered
    later = await sync.sync(
        Notification(element_id=7, event=Event.DELETED), sent_at=time.time(), received_at=time.monotonic()
    )
    assert not later.covered and later.deleted_element
    assert kordiam.fetches == 2


async def test_a_fifo_group_received_in_one_batch_costs_one_fetch(store: SqliteStateStore) -> None:
    """Through the real consumer and handler: the group's messages run one after another, and the first one's
    fetch started after all of them were received."""
    kordiam = CountingKordiam()
    handler = MessageHandler(engine(kordiam, store, clock_skew=5.0), tracing=False)
    counter = itertools.count(1)

    def message() -> QueueMessage:
        n = next(counter)
        return QueueMessage(f"m{n}", f"r{n}", json.dumps({"id": 7}), {}, 1, time.time(), group_id="7")

    batch = [message() for _ in range(4)]
    transport = FakeTransport([batch], fifo=True)
    settings = ConsumerSettings(
        concurrency=4, wait_time_seconds=1, visibility_timeout=30, shutdown_timeout=3, max_receive_count=3
    )
    consumer = Consumer(transport, handler, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    for _ in range(250):
        if len(transport.deleted) == 4:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.deleted == [m.message_id for m in batch]
    assert kordiam.fetches == 1


async def test_a_covered_notification_takes_no_work_slot(store: SqliteStateStore) -> None:
    # The one slot is held by another element's fetch; a notification an earlier fetch covered does not wait for it.
    kordiam = CountingKordiam()
    slots = WorkSlots(1)
    sync = engine(kordiam, store, slots=slots)
    await sync.sync(Notification(element_id=7), sent_at=0.0)
    kordiam.held.clear()
    kordiam.fetching.clear()
    busy = asyncio.create_task(sync.sync(Notification(element_id=8), sent_at=0.0))
    await kordiam.fetching.wait()
    covered = await asyncio.wait_for(sync.sync(Notification(element_id=7), sent_at=1.0), 1)
    assert covered.covered
    # A notification that needs a fetch waits for the slot.
    needs_fetch = asyncio.create_task(sync.sync(Notification(element_id=9), sent_at=0.0))
    await asyncio.sleep(0.05)
    assert not needs_fetch.done() and kordiam.fetches == 2
    kordiam.held.set()
    await busy
    await needs_fetch
    assert kordiam.fetches == 3
