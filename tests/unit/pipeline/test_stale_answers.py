"""Kordiam's answer older than what the bridge already knows (a lagging read): never published, never covering.

Kordiam's API may answer a read from a copy that has not yet caught up with the change a notification announced
(or with a version the bridge already synced). Such an answer must neither reach a channel nor settle the
notification or cover the ones waiting with it: the sync fails as transient and the retry fetches again.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.errors import TransientError
from bridge.pipeline.covering import Fetched, FetchLedger
from bridge.pipeline.fate import is_transient
from bridge.pipeline.notification import Event, Notification
from bridge.pipeline.sync import SyncEngine, SyncFailed
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication, sync_engine

WEB = 99003
NEW = "2026-12-07T10:00:05Z"
OLD = "2026-12-07T10:00:00Z"


def kordiam_holding(modified: str, title: str) -> FakeKordiam:
    kordiam = FakeKordiam()
    kordiam.elements[7] = element_body(7, publication(71, WEB), modificationDate=modified, title=title)
    return kordiam


def engine_of(kordiam: FakeKordiam, state: MemoryStateStore, channel: ScriptedChannel) -> SyncEngine:
    return sync_engine(kordiam, state, [(channel, WEB)])


def announcing(modified: str) -> Notification:
    """A Global Export notification: the element's body, with the modification date it announces."""
    return Notification(7, modification_date=datetime.fromisoformat(modified), shape="element")


async def test_an_answer_older_than_the_version_already_synced_reaches_no_channel() -> None:
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(NEW, "Second version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    assert len(web.upserts) == 1
    kordiam.elements[7] = element_body(7, publication(71, WEB), modificationDate=OLD, title="First version")
    with pytest.raises(SyncFailed) as failed:
        await sync.sync(Notification(7))
    assert len(web.upserts) == 1  # the channel still holds the newer version
    assert [f.stage for f in failed.value.failures] == ["fetch"]
    assert is_transient(failed.value.failures[0].error)
    mark = state.marks[7]
    assert mark.modification_date == datetime(2026, 12, 7, 10, 0, 5, tzinfo=UTC)


async def test_an_answer_older_than_the_notification_announced_is_retried_not_published() -> None:
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(OLD, "First version")
    sync = engine_of(kordiam, state, web)
    with pytest.raises(SyncFailed) as failed:
        await sync.sync(announcing(NEW))
    assert web.upserts == []
    assert isinstance(failed.value.failures[0].error, TransientError)
    assert 7 not in state.marks  # nothing recorded: the retry fetches again, and nothing is covered meanwhile
    kordiam.elements[7] = element_body(7, publication(71, WEB), modificationDate=NEW, title="Second version")
    report = await sync.sync(announcing(NEW))
    assert not report.covered and len(web.upserts) == 1


async def test_an_answer_as_new_as_the_notification_announced_is_published() -> None:
    # Kordiam's API may give the date at a finer precision than the notification's body: not older.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding("2026-12-07T10:00:05.250Z", "Second version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(announcing(NEW))
    assert len(web.upserts) == 1


async def test_a_fetch_that_answered_older_than_a_notification_announced_does_not_cover_it() -> None:
    # The fetch of an id-only notification started after the Global Export notification was sent, but answered
    # the version before it (a lagging read): the announced change is not in the channels yet.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(OLD, "First version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(71, WEB), modificationDate=NEW, title="Second version")
    report = await sync.sync(announcing(NEW), sent_at=0.0)  # sent long before that fetch started
    assert not report.covered and len(web.upserts) == 2


async def test_a_stored_mark_older_than_a_notification_announced_does_not_cover_it() -> None:
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(OLD, "First version")
    await engine_of(kordiam, state, web).sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(71, WEB), modificationDate=NEW, title="Second version")
    other_worker = engine_of(kordiam, state, web)  # its own ledger: only the store's mark can cover
    report = await other_worker.sync(announcing(NEW), sent_at=0.0)
    assert not report.covered and len(web.upserts) == 2


async def test_a_deletion_is_covered_only_by_a_fetch_that_found_the_element_gone() -> None:
    # The fetch started after the deletion was sent, yet found the element (a lagging read): the deletion's own
    # fetch is still owed, or the channels keep the item.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(OLD, "First version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    del kordiam.elements[7]
    report = await sync.sync(Notification(7, event=Event.DELETED), sent_at=0.0)
    assert not report.covered and report.deleted_element
    assert web.deletes == ["web-7-71"]
    other_worker = engine_of(kordiam, state, web)
    again = await other_worker.sync(Notification(7, event=Event.DELETED), sent_at=0.0)
    assert again.covered  # the store's mark says gone: a deletion sent before that fetch is covered


def test_the_ledger_covers_an_announced_version_only_up_to_the_one_it_synced() -> None:
    ledger = FetchLedger(clock_skew=0.0)
    synced = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    ledger.record(7, Fetched(100.0, local_start=50.0, synced=synced))
    assert ledger.covers(7, sent_at=1.0, announced=synced)
    assert not ledger.covers(7, sent_at=1.0, announced=datetime(2026, 12, 7, 10, 0, 1, tzinfo=UTC))
    assert not ledger.covers(7, sent_at=1.0, received_at=1.0, announced=datetime(2026, 12, 7, 10, 0, 1, tzinfo=UTC))


def deletion_announcing(modified: str) -> Notification:
    """A Global Export deletion: the element's body as it was when it was deleted."""
    return Notification(7, Event.DELETED, datetime.fromisoformat(modified), "element")


async def test_a_deletion_answered_with_the_element_as_it_was_is_retried_not_kept() -> None:
    # The deletion's own fetch found the element unchanged since the version its notification named: a lagging
    # read. Synced as present, the deletion would be settled and the channels keep the item for good.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(OLD, "First version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    with pytest.raises(SyncFailed) as failed:
        await sync.sync(deletion_announcing(OLD))
    assert isinstance(failed.value.failures[0].error, TransientError)
    del kordiam.elements[7]
    report = await sync.sync(deletion_announcing(OLD))
    assert report.deleted_element and web.deletes == ["web-7-71"]


async def test_a_deletion_answered_with_a_newer_version_syncs_that_version() -> None:
    # Modified after the deletion its notification named (restored): the element stands, nothing is retried.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(NEW, "Restored")
    sync = engine_of(kordiam, state, web)
    report = await sync.sync(deletion_announcing(OLD))
    assert not report.deleted_element and len(web.upserts) == 1


async def test_a_deletion_is_never_skipped_as_older_than_the_version_synced() -> None:
    # Kordiam's API gave the synced version's date to the millisecond, the deletion's body to the second: the
    # deletion reads as older than what was synced, yet it announces the element gone, which no version is newer
    # than. Skipped, the channels would keep the item.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding("2026-12-07T10:00:05.250Z", "Last version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    del kordiam.elements[7]
    report = await sync.sync(deletion_announcing(NEW))
    assert report.skipped is None and report.deleted_element
    assert web.deletes == ["web-7-71"]


async def test_a_deletion_naming_a_version_seconds_older_than_the_one_synced_still_retracts() -> None:
    # The test above reads older only at millisecond precision, which the skip's comparison to the second already
    # ignores. A deletion body whose date is whole seconds older than the mark must not be skipped either.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding(NEW, "Last version")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    del kordiam.elements[7]
    report = await sync.sync(deletion_announcing(OLD))
    assert report.skipped is None and report.deleted_element
    assert web.deletes == ["web-7-71"]


async def test_a_change_in_the_same_second_as_the_version_synced_is_not_skipped_as_older() -> None:
    # Two saves within one second: the API gave the synced version's date in milliseconds, the newer version's
    # body gives its date to the second, which reads earlier. Skipped as older, the newer version never arrives.
    state, web = MemoryStateStore(), ScriptedChannel("web")
    kordiam = kordiam_holding("2026-12-07T10:00:05.250Z", "First save")
    sync = engine_of(kordiam, state, web)
    await sync.sync(Notification(7))
    kordiam.elements[7] = element_body(
        7, publication(71, WEB), modificationDate="2026-12-07T10:00:05.900Z", title="Second save"
    )
    report = await sync.sync(announcing(NEW))
    assert report.skipped is None and len(web.upserts) == 2
