"""The sync engine on in-process fakes: what it delivers, records, retracts and writes back, and what it reports
when part of it fails."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from bridge.channels.base import ChannelResult
from bridge.channels.kordiam_webhook import KordiamWebhookChannel, KordiamWebhookOptions
from bridge.config import FeedbackSettings
from bridge.errors import ChannelRejected, ChannelUnavailable, KordiamRejected, KordiamUnavailable
from bridge.http import HttpClient
from bridge.kordiam.client import ONE_ATTEMPT
from bridge.kordiam.models import Element, Publication
from bridge.pipeline.fate import is_transient
from bridge.pipeline.notification import Notification
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import Action, StaleWrite, SyncEngine, SyncFailed
from bridge.state.base import ElementBusy, ElementMark
from tests.support import http_answering
from tests.unit.fakes import (
    FakeKordiam,
    FindingChannel,
    MemoryStateStore,
    ScriptedChannel,
    element_body,
    publication,
    sync_engine,
)

WEB, PRINT = 99003, 99004


async def delivered_to_web_and_print(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> tuple[SyncEngine, ScriptedChannel, ScriptedChannel]:
    """Element 1 with publication 11 on the website and 12 in print, synced once to both."""
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    engine = sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)])
    await engine.sync(Notification(1))
    return engine, web, paper


async def test_each_channel_gets_its_platforms_publication_and_the_state_remembers_it(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    report = await sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)]).sync(Notification(1))
    assert web.upserts == [(11, None)] and paper.upserts == [(12, None)]
    assert {(a.channel, a.publication_id, a.action) for a in report.actions} == {
        ("web", 11, Action.CREATED),
        ("print", 12, Action.CREATED),
    }
    assert set(state.rows) == {(1, "web", 11), (1, "print", 12)}
    assert state.marks[1].deleted is False


async def test_a_second_sync_of_the_same_version_changes_nothing(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    await engine.sync(Notification(1))
    writes = len(kordiam.writes)
    report = await engine.sync(Notification(1))
    assert [a.action for a in report.actions] == [Action.UNCHANGED]
    assert len(web.upserts) == 1
    assert report.feedback == [] and len(kordiam.writes) == writes


async def test_force_rewrites_an_unchanged_publication(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    await engine.sync(Notification(1))
    report = await engine.sync(Notification(1, force=True))
    assert web.upserts == [(11, None), (11, "web-1-11")]
    assert [a.action for a in report.actions] == [Action.UPDATED]


async def test_one_failing_channel_keeps_what_the_others_did_and_a_retry_redoes_only_it(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    paper.fail = ChannelUnavailable("print system down")
    engine = sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)])
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    failed = raised.value
    assert [(f.stage, type(f.error)) for f in failed.failures] == [("print", ChannelUnavailable)]
    assert [(a.channel, a.action) for a in failed.report.actions] == [("web", Action.CREATED)]
    assert set(state.rows) == {(1, "web", 11)}
    assert 1 not in state.marks  # the element is not marked synced while a channel lags behind

    paper.fail = None
    report = await engine.sync(Notification(1))
    assert web.upserts == [(11, None)] and paper.upserts == [(12, None)]
    assert {(a.channel, a.action) for a in report.actions} == {("web", Action.UNCHANGED), ("print", Action.CREATED)}
    assert 1 in state.marks


async def test_a_channel_error_is_that_channels_failure(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelRejected("content refused")
    with pytest.raises(SyncFailed) as raised:
        await sync_engine(kordiam, state, [(web, WEB)]).sync(Notification(1))
    assert [(f.stage, type(f.error)) for f in raised.value.failures] == [("web", ChannelRejected)]


async def test_a_stale_write_fails_the_channel_as_transient(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    state.stale = True
    with pytest.raises(SyncFailed) as raised:
        await sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB)]).sync(Notification(1))
    (failure,) = raised.value.failures
    assert failure.stage == "web" and isinstance(failure.error, StaleWrite) and is_transient(failure.error)
    assert state.rows == {}


class LongLinkChannel(ScriptedChannel):
    """A channel whose answer carries an edit link of half a megabyte (a partner system's bug)."""

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        result = await super().upsert(element, publication, external_id)
        return replace(result, edit_link="https://web.test/" + "x" * 500_000, open_link_title="Open it")


async def test_a_link_too_long_to_keep_is_dropped_from_the_delivery_and_its_feedback(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    # Kept, it made the delivery too large for DynamoDB's 400 KB item: the record refused, the message
    # dead-lettered although the channel held the item, and its redrive made the item a second time.
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    with capture_logs() as logs:
        await sync_engine(kordiam, state, [(LongLinkChannel("web"), WEB)]).sync(Notification(1))
    recorded = state.rows[(1, "web", 11)]
    assert recorded.edit_link is None and recorded.open_link_title == "Open it"
    assert recorded.external_id == "web-1-11"
    patch = next(body for method, path, body in kordiam.writes if path == "/elements/1/publications/11")
    assert patch is not None and patch["cms"] == {"openLinkTitle": "Open it"}
    (dropped,) = [entry for entry in logs if entry["event"] == "channel_link_dropped"]
    assert dropped["channel"] == "web" and dropped["field"] == "edit_link" and dropped["bytes"] == 500_017


async def test_an_element_scoped_channel_gives_a_new_publication_its_siblings_item(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    cms = ScriptedChannel("cms", element_scoped=True)
    engine = sync_engine(kordiam, state, [(cms, WEB)])
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    await engine.sync(Notification(1))
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, WEB))
    await engine.sync(Notification(1))
    assert cms.upserts == [(11, None), (12, "cms-1-11")]
    assert list(cms.items) == ["cms-1-11"]


async def test_a_publication_scoped_channel_gives_a_new_publication_an_item_of_its_own(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    await engine.sync(Notification(1))
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, WEB))
    await engine.sync(Notification(1))
    assert (12, None) in web.upserts and sorted(web.items) == ["web-1-11", "web-1-12"]


async def test_feedback_writes_only_what_kordiam_does_not_hold(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(
        1,
        publication(11, WEB),
        # Kordiam already holds this one's id and edit link: nothing to write for it.
        publication(12, PRINT, externalId="print-1-12", cms={"editLink": "https://print.test/print-1-12"}),
    )
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    report = await sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)]).sync(Notification(1))
    patched = [path for method, path, _ in kordiam.writes if method == "PATCH"]
    assert patched == ["/elements/1/publications/11"]
    assert (
        "POST",
        "/elements/1/external-element/link",
        {"externalId": "web-1-11", "link": "https://web.test/web-1-11"},
    ) in [(m, p, b) for m, p, b in kordiam.writes]
    assert report.feedback[0] == "publication 11: externalId=web-1-11"


async def test_feedback_marks_a_live_item_published_once(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    await sync_engine(kordiam, state, [(ScriptedChannel("web", live=True), WEB)]).sync(Notification(1))
    assert ("POST", "/elements/1/publications/11/publish", None) in kordiam.writes


async def test_no_feedback_when_it_is_disabled(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    engine = sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB)], feedback=FeedbackSettings(enabled=False))
    report = await engine.sync(Notification(1))
    assert kordiam.writes == [] and report.feedback == []


async def test_a_404_retracts_every_delivery_and_marks_the_element_deleted(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, web, paper = await delivered_to_web_and_print(kordiam, state)
    del kordiam.elements[1]
    report = await engine.sync(Notification(1))
    assert report.deleted_element
    assert web.deletes == ["web-1-11"] and paper.deletes == ["print-1-12"]
    assert {(a.channel, a.action) for a in report.actions} == {("web", Action.DELETED), ("print", Action.DELETED)}
    assert state.rows == {} and state.marks[1].deleted


async def test_a_failed_retraction_leaves_the_element_unmarked_and_its_row_in_place(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, web, paper = await delivered_to_web_and_print(kordiam, state)
    del kordiam.elements[1]
    paper.fail = ChannelUnavailable("print system down")
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    assert [f.stage for f in raised.value.failures] == ["print"]
    assert web.deletes == ["web-1-11"]  # the other channel's retraction is done and forgotten
    assert set(state.rows) == {(1, "print", 12)} and not state.marks[1].deleted


async def test_a_publication_moved_off_a_platform_is_retracted_there(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    engine = sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)])
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    await engine.sync(Notification(1))
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    report = await engine.sync(Notification(1))
    assert paper.deletes == ["print-1-12"] and web.deletes == []
    assert ("print", 12, Action.DELETED) in {(a.channel, a.publication_id, a.action) for a in report.actions}


async def test_a_notification_older_than_the_synced_version_is_skipped_without_a_fetch(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    synced = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    state.marks[1] = ElementMark(1, synced, 3, deleted=False)
    kordiam.fail_get = 500  # a fetch would fail the sync
    web = ScriptedChannel("web")
    older = Notification(1, modification_date=datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
    report = await sync_engine(kordiam, state, [(web, WEB)]).sync(older)
    assert report.skipped is not None and web.upserts == []


async def test_a_refused_fetch_is_a_fetch_failure(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.fail_get = 400
    with pytest.raises(SyncFailed) as raised:
        await sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB)]).sync(Notification(1))
    (failure,) = raised.value.failures
    assert failure.stage == "fetch" and isinstance(failure.error, KordiamRejected)


async def test_a_busy_lease_is_a_lease_failure(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    state.busy = True
    with pytest.raises(SyncFailed) as raised:
        await sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB)]).sync(Notification(1))
    (failure,) = raised.value.failures
    assert failure.stage == "lease" and isinstance(failure.error, ElementBusy)


# --- a deleted element's items the state store has no delivery for (FindsItems) -----------------------------------


async def test_a_deleted_elements_unrecorded_item_is_found_and_retracted_once_per_channel_that_can_search(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    web, paper = FindingChannel("web"), ScriptedChannel("print")
    engine = sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)])
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    await engine.sync(Notification(1))
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT), publication(13, WEB))
    web.items["web-1-13"] = [13]  # publication 13's create was done, its answer lost: no row in the store
    assert web.finds == [], "creates and updates never search"
    del kordiam.elements[1]
    report = await engine.sync(Notification(1))
    assert web.finds == [1] and web.deletes == ["web-1-11", "web-1-13"] and web.items == {}
    assert paper.deletes == ["print-1-12"]
    assert [(a.channel, a.publication_id, a.action) for a in report.actions] == [
        ("web", 11, Action.DELETED),
        ("print", 12, Action.DELETED),
        ("web", 13, Action.DELETED),
    ]
    assert state.rows == {} and state.marks[1].deleted


async def test_a_failed_search_is_that_channels_failure_and_marks_nothing(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    web = FindingChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    web.items["web-1-11"] = [11]
    web.fail_find = ChannelUnavailable("WordPress down", retry_after=7)
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))  # never synced, and deleted
    (failure,) = raised.value.failures
    assert failure.stage == "web" and is_transient(failure.error)
    assert web.items == {"web-1-11": [11]} and 1 not in state.marks
    web.fail_find = None
    await engine.sync(Notification(1))
    assert web.items == {} and state.marks[1].deleted


async def test_a_channel_whose_recorded_retraction_failed_is_not_searched(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    web = FindingChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    await engine.sync(Notification(1))
    del kordiam.elements[1]
    web.fail = ChannelUnavailable("down")
    with pytest.raises(SyncFailed):
        await engine.sync(Notification(1))
    assert web.finds == [], "the retry searches, once the recorded item is retracted"


# --- a publication that moves away: what the feedback wrote for its item is cleared --------------------------------

ELSEWHERE = 99005  # a platform no channel takes


def moved(kordiam: FakeKordiam, publication_id: int, platform: int = ELSEWHERE) -> None:
    """An editor moves the publication to another platform; Kordiam keeps what the feedback wrote on it."""
    held = next(p for p in kordiam.elements[1]["publications"] if p["id"] == publication_id)
    held["platform"] = {"id": platform}


def held_publication(kordiam: FakeKordiam, publication_id: int) -> dict[str, object]:
    return next(p for p in kordiam.elements[1]["publications"] if p["id"] == publication_id)


async def test_a_moved_publications_item_is_retracted_and_its_external_id_and_links_are_cleared(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, web, paper = await delivered_to_web_and_print(kordiam, state)
    assert held_publication(kordiam, 12)["externalId"] == "print-1-12"
    moved(kordiam, 12)
    kordiam.writes.clear()
    report = await engine.sync(Notification(1))
    assert paper.deletes == ["print-1-12"] and web.deletes == []
    assert kordiam.writes == [
        ("PATCH", "/elements/1/publications/12", {"externalId": None, "cms": {"editLink": None}}),
    ]
    assert "externalId" not in held_publication(kordiam, 12) and "cms" not in held_publication(kordiam, 12)
    assert held_publication(kordiam, 11)["externalId"] == "web-1-11"  # the other publication keeps its feedback
    assert report.feedback == ["publication 12: cleared print print-1-12"]
    assert set(state.rows) == {(1, "web", 11)}
    kordiam.writes.clear()
    again = await engine.sync(Notification(1))  # the clear coming back as a notification ends there
    assert kordiam.writes == [] and again.feedback == [] and paper.deletes == ["print-1-12"]


async def test_the_main_channels_moved_item_is_unlinked_from_the_element_when_no_publication_stays_there(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, web, _ = await delivered_to_web_and_print(kordiam, state)
    assert kordiam.elements[1]["externalElement"]["externalId"] == "web-1-11"
    moved(kordiam, 11)
    kordiam.writes.clear()
    report = await engine.sync(Notification(1))
    assert web.deletes == ["web-1-11"]
    assert ("POST", "/elements/1/external-element/unlink", {}) in kordiam.writes
    assert "externalElement" not in kordiam.elements[1]
    assert report.feedback == ["publication 11: cleared web web-1-11", "element 1: unlinked from web web-1-11"]


async def test_the_element_is_linked_to_the_main_channels_next_item_instead_of_unlinked(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(13, WEB))
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    await engine.sync(Notification(1))
    moved(kordiam, 11)
    kordiam.writes.clear()
    await engine.sync(Notification(1))
    assert [(method, path) for method, path, _ in kordiam.writes] == [
        ("PATCH", "/elements/1/publications/11"),
        ("POST", "/elements/1/external-element/link"),
    ]
    assert kordiam.elements[1]["externalElement"]["externalId"] == "web-1-13"


async def test_values_someone_else_set_on_a_moved_publication_are_left(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, _, paper = await delivered_to_web_and_print(kordiam, state)
    held = held_publication(kordiam, 12)
    held["externalId"] = "legacy-7"  # another integration took the publication over; the edit link is still ours
    moved(kordiam, 12)
    kordiam.writes.clear()
    await engine.sync(Notification(1))
    assert kordiam.writes == [("PATCH", "/elements/1/publications/12", {"cms": {"editLink": None}})]
    assert held["externalId"] == "legacy-7" and "cms" not in held

    held["cms"] = {"editLink": "https://legacy.test/7"}  # set by hand after the move: nothing of the bridge's
    moved(kordiam, 12, PRINT)
    await engine.sync(Notification(1))  # back in print: delivered again (a new item)
    held["externalId"], held["cms"] = "legacy-7", {"editLink": "https://legacy.test/7"}
    moved(kordiam, 12)
    kordiam.writes.clear()
    await engine.sync(Notification(1))
    assert kordiam.writes == [] and paper.deletes == ["print-1-12", "print-1-12"]
    assert held["externalId"] == "legacy-7" and held["cms"] == {"editLink": "https://legacy.test/7"}


async def test_a_failed_clear_leaves_the_retraction_to_the_retry_which_clears_it(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    engine = sync_engine(kordiam, state, [(web, WEB), (paper, PRINT)], retry=ONE_ATTEMPT)
    await engine.sync(Notification(1))
    moved(kordiam, 12)
    kordiam.failing_writes = [503]
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    (failure,) = raised.value.failures
    assert failure.stage == "feedback" and isinstance(failure.error, KordiamUnavailable)
    # Nothing was retracted: the delivery is still the proof that Kordiam's values are the bridge's own.
    assert paper.deletes == [] and (1, "print", 12) in state.rows
    assert held_publication(kordiam, 12)["externalId"] == "print-1-12"

    report = await engine.sync(Notification(1))
    assert paper.deletes == ["print-1-12"] and set(state.rows) == {(1, "web", 11)}
    assert "externalId" not in held_publication(kordiam, 12) and "cms" not in held_publication(kordiam, 12)
    assert report.feedback == ["publication 12: cleared print print-1-12"]


async def test_a_publication_moved_back_before_the_retry_keeps_its_item_and_feedback(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    kordiam.elements[1] = element_body(1, publication(11, WEB), publication(12, PRINT))
    paper = ScriptedChannel("print")
    engine = sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB), (paper, PRINT)], retry=ONE_ATTEMPT)
    await engine.sync(Notification(1))
    moved(kordiam, 12)
    kordiam.failing_writes = [503]
    with pytest.raises(SyncFailed):
        await engine.sync(Notification(1))
    moved(kordiam, 12, PRINT)
    report = await engine.sync(Notification(1))
    assert ("print", 12, Action.UNCHANGED) in {(a.channel, a.publication_id, a.action) for a in report.actions}
    assert list(paper.items) == ["print-1-12"] and held_publication(kordiam, 12)["externalId"] == "print-1-12"


async def test_a_clear_kordiam_refuses_for_good_does_not_keep_the_item_published(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, _, paper = await delivered_to_web_and_print(kordiam, state)
    moved(kordiam, 12)
    kordiam.failing_writes = [400]
    with pytest.raises(SyncFailed) as raised:
        await engine.sync(Notification(1))
    (failure,) = raised.value.failures
    assert failure.stage == "feedback" and not is_transient(failure.error)
    assert paper.deletes == ["print-1-12"] and set(state.rows) == {(1, "web", 11)}


async def test_no_clear_when_feedback_is_disabled(kordiam: FakeKordiam, state: MemoryStateStore) -> None:
    kordiam.elements[1] = element_body(
        1,
        publication(11, WEB),
        publication(12, PRINT, externalId="print-1-12", cms={"editLink": "https://print.test/print-1-12"}),
    )
    paper = ScriptedChannel("print")
    off = FeedbackSettings(enabled=False)
    engine = sync_engine(kordiam, state, [(ScriptedChannel("web"), WEB), (paper, PRINT)], feedback=off)
    await engine.sync(Notification(1))
    moved(kordiam, 12)
    report = await engine.sync(Notification(1))
    assert paper.deletes == ["print-1-12"] and kordiam.writes == [] and report.feedback == []
    assert held_publication(kordiam, 12)["externalId"] == "print-1-12"


async def test_a_deleted_elements_retraction_writes_nothing_to_kordiam(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    engine, web, paper = await delivered_to_web_and_print(kordiam, state)
    del kordiam.elements[1]
    kordiam.writes.clear()
    await engine.sync(Notification(1))
    assert web.deletes and paper.deletes and kordiam.writes == []


async def test_an_element_with_half_an_emoji_is_synced_with_the_replacement_character(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    # Kordiam's JSON carries the escape "\ud83d" alone: before, orjson refused the whole answer and the story was
    # dead-lettered as an unexpected answer.
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    kordiam.elements[1]["title"] = "Harbour \ud83d reopens"
    answer = kordiam.answer

    def escaped(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/elements/1"):
            body = json.dumps(kordiam.elements[1]).encode()  # ensure_ascii: the lone surrogate as its escape
            return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
        return answer(request)

    kordiam.answer = escaped  # type: ignore[method-assign]
    web = ScriptedChannel("web")
    report = await sync_engine(kordiam, state, [(web, WEB)]).sync(Notification(1))
    assert [a.action for a in report.actions] == [Action.CREATED]
    assert web.upserts == [(11, None)]


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "new-process"])
async def test_a_removed_publication_leaves_the_remote_element_when_no_sibling_passes_the_statuses_filter(
    kordiam: FakeKordiam, state: MemoryStateStore, restart: bool
) -> None:
    # Both publications were exported to the Global Export receiver, then 12 moved to a status the channel's
    # filter does not let through (it is left as it is, still standing on the remote element), then 11 left the
    # element. The remote element must be sent without 11: the story is not deleted and 12 still stands on it.
    remote: dict[str, Any] = {}

    def receiver(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        item = request.url.path.rsplit("/", 1)[-1]
        if request.method == "POST":
            remote["1"] = body
            return httpx.Response(201, json={"id": 1})
        if item not in remote:
            return httpx.Response(404, json={"message": "no such element"})
        if request.method == "PUT":
            remote[item] = body
            return httpx.Response(200, json={"id": int(item)})
        del remote[item]
        return httpx.Response(204)

    ready, draft = {"id": 9, "name": "Ready"}, {"id": 1, "name": "Draft"}
    options = KordiamWebhookOptions.model_validate(
        {"url": "https://cms.example.org/ge", "auth": {"type": "bearer", "token": "t0ken-value"}}
    )

    def engine_over(http: HttpClient) -> SyncEngine:
        cms = KordiamWebhookChannel("cms", options, http, platforms=[WEB], statuses=["Ready"])
        route = Route(cms, frozenset({WEB}), statuses=("Ready",))
        return SyncEngine(
            kordiam=kordiam.client(), routes=[route], state=state, feedback=FeedbackSettings(), main_channel="cms"
        )

    async with http_answering(receiver) as http:
        engine = engine_over(http)
        kordiam.elements[1] = element_body(1, publication(11, WEB, status=ready), publication(12, WEB, status=ready))
        await engine.sync(Notification(1))
        kordiam.elements[1] = element_body(1, publication(11, WEB, status=ready), publication(12, WEB, status=draft))
        await engine.sync(Notification(1))
        assert [p["id"] for p in remote["1"]["publications"]] == [11, 12]
        kordiam.elements[1] = element_body(1, publication(12, WEB, status=draft))
        report = await (engine_over(http) if restart else engine).sync(Notification(1))
    assert [p["id"] for p in remote["1"]["publications"]] == [12]
    assert set(state.rows) == {(1, "cms", 12)}
    assert ("cms", 11, Action.DELETED) in {(a.channel, a.publication_id, a.action) for a in report.actions}


async def test_an_element_due_a_resync_is_rewritten_whatever_covers_it_and_its_token_cleared(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    """A sync that lost its lease marked the element (``ElementMark.resync``): its channels may hold an older
    version than the deliveries say, so no skip applies, and the item its delivery names is written again."""
    kordiam.elements[1] = element_body(1, publication(11, WEB), modificationDate="2026-03-01T09:30:00Z")
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    await engine.sync(Notification(1))
    synced = state.marks[1]
    assert synced.fetched_at is not None and synced.resync is None
    state.marks[1] = replace(synced, resync="token-1")
    older = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    # Sent before the recorded fetch started, and older than the synced version: both skips would apply (on a
    # worker whose own ledger does not hold that fetch: another one's).
    engine = sync_engine(kordiam, state, [(web, WEB)])
    report = await engine.sync(Notification(1, modification_date=older), sent_at=synced.fetched_at - 60)
    assert [(a.action, a.external_id) for a in report.actions] == [(Action.UPDATED, "web-1-11")]
    assert web.upserts == [(11, None), (11, "web-1-11")]  # the same item: nothing published twice
    assert state.marks[1].resync is None
    report = await engine.sync(Notification(1))
    assert [a.action for a in report.actions] == [Action.UNCHANGED]


async def test_a_forced_sync_clears_the_resync_token_it_made_good(
    kordiam: FakeKordiam, state: MemoryStateStore
) -> None:
    # A forced sync rewrites every channel, as a re-sync does: where the lease's take does not return the mark (the
    # fake, as DynamoDB), it reads the mark all the same, or the token would force the element's next sync again.
    kordiam.elements[1] = element_body(1, publication(11, WEB))
    web = ScriptedChannel("web")
    engine = sync_engine(kordiam, state, [(web, WEB)])
    await engine.sync(Notification(1))
    state.marks[1] = replace(state.marks[1], resync="token-1")
    report = await engine.sync(Notification(1, force=True))
    assert [a.action for a in report.actions] == [Action.UPDATED]
    assert state.marks[1].resync is None
