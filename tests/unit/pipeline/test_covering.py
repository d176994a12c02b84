"""The covering rule at its edges: which notifications a fetch that already ran makes needless."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.config import FeedbackSettings
from bridge.errors import TransientError
from bridge.pipeline.covering import FetchLedger
from bridge.pipeline.notification import Notification
from bridge.pipeline.sync import SyncEngine, SyncFailed
from bridge.state import SqliteStateStore


def test_a_notification_sent_before_a_fetch_started_is_covered() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, fetch_started=100.0)
    assert ledger.covers(7, sent_at=99.9)


def test_a_notification_sent_after_a_fetch_started_is_not_covered() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, fetch_started=100.0)
    assert not ledger.covers(7, sent_at=100.1)
    assert not ledger.covers(7, sent_at=100.0)


def test_the_clock_skew_allowance_narrows_what_a_fetch_covers() -> None:
    ledger = FetchLedger(clock_skew=5.0)
    ledger.record(7, fetch_started=100.0)
    assert not ledger.covers(7, sent_at=96.0)  # within the allowance: the queue's clock may run ahead
    assert ledger.covers(7, sent_at=94.9)


def test_a_fetch_covers_only_its_own_element_and_never_an_unstamped_notification() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, fetch_started=100.0)
    assert not ledger.covers(8, sent_at=1.0)
    assert not ledger.covers(7, sent_at=None)


def test_an_earlier_fetch_recorded_late_does_not_shrink_what_a_later_one_covers() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    ledger.record(7, fetch_started=100.0)
    ledger.record(7, fetch_started=50.0)
    assert ledger.covers(7, sent_at=99.0)


def test_the_ledger_forgets_the_least_recently_recorded_element_beyond_its_capacity() -> None:
    ledger = FetchLedger(clock_skew=0.0, capacity=1)
    ledger.record(7, fetch_started=100.0)
    ledger.record(8, fetch_started=100.0)
    assert not ledger.covers(7, sent_at=1.0)  # forgotten: costs a fetch, never staleness
    assert ledger.covers(8, sent_at=1.0)


class CountingKordiam:
    """Answers every element as deleted (None), or fails while ``failing`` is set; counts the fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self.failing = False

    async def get_element(self, element_id: int) -> None:
        self.fetches += 1
        if self.failing:
            raise TransientError("Kordiam answered 503")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def engine(kordiam: CountingKordiam, store: SqliteStateStore) -> SyncEngine:
    return SyncEngine(
        kordiam=kordiam,  # type: ignore[arg-type]
        routes=[],
        state=store,
        feedback=FeedbackSettings(enabled=False),
        main_channel="folder",
        fetched=FetchLedger(clock_skew=0.0),
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
    kordiam.failing = False
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
    kordiam.failing = False
    report = await second.sync(Notification(element_id=7), sent_at=1.0)
    assert not report.covered and kordiam.fetches == 2
