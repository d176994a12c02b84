"""``kordiam-bridge element``: the comparison with Kordiam (the pipeline's routing and fingerprint), the report from
an in-memory store, and what it prints."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bridge.admin import element as element_module
from bridge.admin.element import compare, element_report, fetch_element, lease_view, replay_command
from bridge.admin.rendering import render_element, short_fingerprint
from bridge.admin.results import (
    DELETED_IN_KORDIAM,
    IN_LINE,
    NOT_CONFIGURED,
    NOT_EXPORTED,
    SENT_AGAIN,
    WITHDRAWN,
    ElementDeadLetters,
    ElementParked,
    ElementReport,
    ElementWorker,
    to_json,
)
from bridge.channels.base import Channel
from bridge.config import (
    ChannelSettings,
    FeedbackSettings,
    KordiamCommandSettings,
    OpsSettings,
    QueueSettings,
    StatusSettings,
)
from bridge.errors import AdminError
from bridge.kordiam.models import Element
from bridge.ops.server import OpsServer
from bridge.pipeline.fingerprint import _unprefixed, fingerprint
from bridge.pipeline.notification import Notification
from bridge.pipeline.pause import WorkerPause
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import Action, SyncEngine
from bridge.queue.gate import ReceiveGate
from bridge.queue.transport import PagedIn
from bridge.state.base import Delivery, ElementMark, ElementRecord, LeaseRecord, RecordedDelivery
from bridge.state.leases import LeaseOwner
from tests.support import worker_ops
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication

WEB = ChannelSettings(name="web", type="folder", platforms=[1], statuses=["Ready"], path="/tmp/web")
PRINT = ChannelSettings(name="print", type="folder", platforms=[2], path="/tmp/print")
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def story(*publications: dict[str, Any], title: str = "Budget") -> Element:
    return Element.model_validate(element_body(7, *publications, title=title, modificationDate="2026-03-01T09:30:00Z"))


def delivered(element: Element, channel: str, publication_id: int, *, digest: str | None = None) -> Delivery:
    [pub] = [p for p in element.publications if p.id == publication_id]
    return Delivery(7, channel, publication_id, f"{channel}-{publication_id}", digest or fingerprint(element, pub))


def record(*deliveries: Delivery, mark: ElementMark | None = None, lease: LeaseRecord | None = None) -> ElementRecord:
    return ElementRecord(7, mark, [RecordedDelivery(d, T0) for d in deliveries], lease)


def verdicts(element: Element | None, held: ElementRecord) -> dict[tuple[str, int], str]:
    checked = compare(element, 7, held, [WEB, PRINT], "kordiam-bridge replay 7")
    return {(c.channel, c.publication_id): c.verdict for c in checked.checks}


READY = {"status": {"id": 3, "name": "Ready"}}
DRAFT = {"status": {"id": 1, "name": "Draft"}}


def test_a_channel_given_the_current_content_is_in_line_and_one_given_older_content_would_be_sent_again() -> None:
    now = story(publication(70, 1, **READY), publication(71, 2))
    before = story(publication(70, 1, **READY), publication(71, 2), title="Budget (draft)")
    held = record(delivered(now, "web", 70), delivered(before, "print", 71))
    assert verdicts(now, held) == {
        ("web", 70): IN_LINE,
        ("web", 71): NOT_EXPORTED,  # platform 2 is print's
        ("print", 70): NOT_EXPORTED,
        ("print", 71): SENT_AGAIN,
    }


def test_a_fingerprint_an_earlier_bridge_stored_still_counts_as_in_line() -> None:
    now = story(publication(71, 2))
    legacy = delivered(now, "print", 71, digest=_unprefixed(now, now.publications[0]))
    assert verdicts(now, record(legacy))[("print", 71)] == IN_LINE


def test_only_changes_the_fingerprint_sees_make_a_channel_out_of_line() -> None:
    """Kordiam's version and modification date change with our own feedback: not a change of content."""
    now = story(publication(71, 2))
    bumped = Element.model_validate({**now.model_dump(by_alias=True), "version": 99})
    assert verdicts(bumped, record(delivered(now, "print", 71)))[("print", 71)] == IN_LINE


def test_a_status_the_filter_does_not_let_through_is_not_exported_and_what_the_channel_holds_stays() -> None:
    now = story(publication(70, 1, **DRAFT))
    was_ready = story(publication(70, 1, **READY))
    checked = compare(now, 7, record(delivered(was_ready, "web", 70)), [WEB], "r")
    [check] = checked.checks
    assert (check.verdict, check.out_of_line) == (NOT_EXPORTED, False)
    assert check.detail is not None and "1 (Draft)" in check.detail and "keeps what it was last given" in check.detail


def test_a_publication_never_sent_would_be_sent() -> None:
    now = story(publication(70, 1, **READY))
    checked = compare(now, 7, record(), [WEB], "r")
    assert [(c.verdict, c.detail, c.out_of_line) for c in checked.checks] == [
        (SENT_AGAIN, "never sent to this channel", True)
    ]


def test_a_delivery_for_a_publication_gone_from_the_element_or_its_platform_would_be_withdrawn() -> None:
    was = story(publication(70, 1, **READY), publication(71, 2))
    now = story(publication(70, 1, **READY), publication(71, 1))  # 71 moved from print's platform to web's
    found = verdicts(now, record(delivered(was, "web", 70), delivered(was, "print", 71)))
    assert found[("print", 71)] == WITHDRAWN
    gone = story(publication(70, 1, **READY))
    assert verdicts(gone, record(delivered(was, "web", 70), delivered(was, "print", 71)))[("print", 71)] == WITHDRAWN


def test_an_element_deleted_in_kordiam_is_out_of_line_where_a_channel_still_holds_it() -> None:
    was = story(publication(70, 1, **READY), publication(71, 2))
    held = record(delivered(was, "web", 70), delivered(was, "gone", 71))
    checked = compare(None, 7, held, [WEB, PRINT], "r")
    assert not checked.found
    assert [(c.channel, c.verdict) for c in checked.checks] == [("web", DELETED_IN_KORDIAM), ("gone", NOT_CONFIGURED)]
    assert compare(None, 7, record(), [WEB, PRINT], "r").checks == []  # deleted, and nothing left anywhere


def test_the_replay_line_names_the_config_given_quoted_for_a_shell() -> None:
    assert replay_command(4711, None) == "kordiam-bridge replay 4711"
    assert (
        replay_command(4711, Path("my configs/bridge.toml"))
        == "kordiam-bridge replay --config 'my configs/bridge.toml' 4711"
    )


def test_a_lease_is_held_until_it_expires_and_names_its_process() -> None:
    me = LeaseOwner.of_process(os.getpid())
    now = time.time()
    held = lease_view(LeaseRecord(me.encode(), now + 60), now)
    assert held is not None and (held.held, held.pid, held.host, held.owner_gone) == (True, os.getpid(), me.host, False)
    expired = lease_view(LeaseRecord(me.encode(), now - 1), now)
    assert expired is not None and not expired.held
    odd = lease_view(LeaseRecord("written-by-an-older-bridge", now + 60), now)
    assert odd is not None and (odd.pid, odd.owner) == (None, "written-by-an-older-bridge")
    assert lease_view(None) is None


# --- the verdicts against what the sync engine's next sync does (the real engine, on the fakes)

CMS = ChannelSettings(name="cms", type="kordiam-webhook", platforms=[1], url="https://cms.test/ge")
CMS_READY = CMS.model_copy(update={"statuses": ["Ready"]})
# What each action of the engine's report is, as a verdict.
ACTED = {Action.CREATED: SENT_AGAIN, Action.UPDATED: SENT_AGAIN, Action.UNCHANGED: IN_LINE, Action.DELETED: WITHDRAWN}


def engine_for(
    kordiam: FakeKordiam, state: MemoryStateStore, routes: list[tuple[ChannelSettings, Channel]]
) -> SyncEngine:
    """The engine the worker builds from these channel settings (platforms, statuses), over the fakes."""
    return SyncEngine(
        kordiam=kordiam.client(),
        routes=[
            Route(channel, frozenset(s.platforms), tuple(s.statuses) if s.statuses is not None else None)
            for s, channel in routes
        ],
        state=state,
        feedback=FeedbackSettings(),
        main_channel=routes[0][0].name,
    )


async def said_and_done(
    kordiam: FakeKordiam, state: MemoryStateStore, engine: SyncEngine, channels: list[ChannelSettings]
) -> dict[tuple[str, int], str]:
    """The command's verdicts on element 7 now, once each; then the engine's next sync, which must do just what
    they say: a write where "would be sent again", a retraction where "would be withdrawn", nothing where "in
    line" (an unchanged publication) or "not exported"."""
    element = Element.model_validate(kordiam.elements[7])
    checks = compare(element, 7, await state.element_record(7), channels, "r").checks
    said = {(c.channel, c.publication_id): c.verdict for c in checks}
    assert len(said) == len(checks), checks  # one verdict per channel and publication
    report = await engine.sync(Notification(7))
    done = {(a.channel, a.publication_id): ACTED[a.action] for a in report.actions}
    assert {key: verdict for key, verdict in said.items() if verdict != NOT_EXPORTED} == done
    return said


@pytest.mark.parametrize("how", ["removed", "moved off the platform"])
async def test_a_sibling_re_sent_without_a_withdrawn_publication_would_be_sent_again(how: str) -> None:
    """kordiam-webhook: one remote element for the story. A publication that leaves the channel while a sibling
    stays on that element is not deleted: the sibling's upsert sends the element without it."""
    kordiam, state, cms = FakeKordiam(), MemoryStateStore(), ScriptedChannel("cms", element_scoped=True)
    engine = engine_for(kordiam, state, [(CMS, cms)])
    kordiam.elements[7] = element_body(7, publication(70, 1), publication(71, 1))
    await engine.sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(71, 1), *([publication(70, 2)] if how != "removed" else []))
    said = await said_and_done(kordiam, state, engine, [CMS])
    assert said[("cms", 70)] == WITHDRAWN and said[("cms", 71)] == SENT_AGAIN
    assert cms.deletes == [] and cms.upserts[-1] == (71, "cms-7-70")  # the element PUT again, without 70


async def test_a_sibling_the_statuses_filter_holds_back_is_sent_all_the_same_to_withdraw_its_sibling() -> None:
    kordiam, state, cms = FakeKordiam(), MemoryStateStore(), ScriptedChannel("cms", element_scoped=True)
    engine = engine_for(kordiam, state, [(CMS_READY, cms)])
    kordiam.elements[7] = element_body(7, publication(70, 1, **READY), publication(71, 1, **READY))
    await engine.sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(70, 1, **READY), publication(71, 1, **DRAFT))
    assert await said_and_done(kordiam, state, engine, [CMS_READY]) == {
        ("cms", 70): IN_LINE,
        ("cms", 71): NOT_EXPORTED,
    }
    kordiam.elements[7] = element_body(7, publication(71, 1, **DRAFT))
    said = await said_and_done(kordiam, state, engine, [CMS_READY])
    assert said == {("cms", 71): SENT_AGAIN, ("cms", 70): WITHDRAWN}


async def test_only_the_first_publication_exported_carries_the_withdrawal() -> None:
    kordiam, state, cms = FakeKordiam(), MemoryStateStore(), ScriptedChannel("cms", element_scoped=True)
    engine = engine_for(kordiam, state, [(CMS, cms)])
    kordiam.elements[7] = element_body(7, publication(70, 1), publication(71, 1), publication(72, 1))
    await engine.sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(71, 1), publication(72, 1))
    said = await said_and_done(kordiam, state, engine, [CMS])
    assert said == {("cms", 71): SENT_AGAIN, ("cms", 72): IN_LINE, ("cms", 70): WITHDRAWN}


@pytest.mark.parametrize("how", ["removed", "moved off the platform"])
async def test_a_publication_scoped_channel_deletes_a_withdrawn_publication_and_leaves_its_sibling(how: str) -> None:
    kordiam, state, web = FakeKordiam(), MemoryStateStore(), ScriptedChannel("web")
    channel = ChannelSettings(name="web", type="folder", platforms=[1], path="/tmp/web")
    engine = engine_for(kordiam, state, [(channel, web)])
    kordiam.elements[7] = element_body(7, publication(70, 1), publication(71, 1))
    await engine.sync(Notification(7))
    kordiam.elements[7] = element_body(7, publication(71, 1), *([publication(70, 2)] if how != "removed" else []))
    # Moved: one verdict for it, "would be withdrawn", not a "not exported" row beside it.
    assert await said_and_done(kordiam, state, engine, [channel]) == {("web", 71): IN_LINE, ("web", 70): WITHDRAWN}
    assert web.deletes == ["web-7-70"]


async def test_an_element_due_a_resync_would_be_sent_again_where_its_fingerprints_match() -> None:
    """A sync that lost its lease left a re-sync token: the next sync rewrites every exported publication."""
    kordiam, state, web = FakeKordiam(), MemoryStateStore(), ScriptedChannel("web")
    engine = engine_for(kordiam, state, [(WEB, web), (PRINT, ScriptedChannel("print"))])
    kordiam.elements[7] = element_body(7, publication(70, 1, **READY), publication(71, 2), publication(72, 1, **DRAFT))
    await engine.sync(Notification(7))
    state.marks[7] = replace(state.marks[7], resync="token-1")
    said = await said_and_done(kordiam, state, engine, [WEB, PRINT])
    assert (said[("web", 70)], said[("print", 71)], said[("web", 72)]) == (SENT_AGAIN, SENT_AGAIN, NOT_EXPORTED)
    assert state.marks[7].resync is None
    assert set((await said_and_done(kordiam, state, engine, [WEB, PRINT])).values()) == {IN_LINE, NOT_EXPORTED}


# --- the report from a store, as the command opens it


def settings() -> StatusSettings:
    return StatusSettings(
        queue={"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"},
        state={"url": "sqlite:///state.db"},
        channels=[WEB.model_dump(), PRINT.model_dump()],
        ops={"port": 0},  # no endpoint to ask: a worker of another test run may listen on the default port
    )


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> MemoryStateStore:
    memory = MemoryStateStore()

    async def open_store(_: StatusSettings, *, read_only: bool) -> MemoryStateStore:
        assert read_only  # the command changes nothing in the store
        return memory

    monkeypatch.setattr(element_module, "open_store", open_store)
    return memory


class NeverHealing(WorkerPause):
    """A fault of the whole worker whose probe keeps finding it (Kordiam answering 503 to everyone)."""

    name = "kordiam-outage"
    healed = "Kordiam answers"

    async def _probe(self) -> str | None:
        return "Kordiam does not answer: HTTP 503"


@pytest.fixture
async def paused_worker() -> AsyncIterator[OpsServer]:
    """A worker's ops endpoint, wired to its gate as ``run_worker`` wires it, while a fault pauses it."""
    gate = ReceiveGate()
    pause = NeverHealing(gate)
    async with worker_ops(gate) as ops:
        pause.pause("Kordiam does not answer: HTTP 503")
        try:
            yield ops
        finally:
            await pause.aclose()


async def test_while_the_worker_is_paused_the_report_says_nothing_is_delivered_not_no_problems(
    store: MemoryStateStore, paused_worker: OpsServer
) -> None:
    now = story(publication(70, 1, **READY))
    await store.record(delivered(now, "web", 70))
    await store.mark_element(ElementMark(7, T0, 3, deleted=False, fetched_at=T0.timestamp()))
    paused = settings().model_copy(update={"ops": OpsSettings(port=paused_worker.port)})
    report = await element_report(paused, 7)
    [problem] = report.problems
    assert problem.startswith(f"the worker at http://127.0.0.1:{paused_worker.port} is paused since 20")
    assert "Kordiam does not answer: HTTP 503" in problem and "element 7" in problem
    assert "resumes by itself" in problem
    text = shown(report)
    assert "No problems found" not in text and "Problems" in text
    assert f"Worker at http://127.0.0.1:{paused_worker.port}: paused since 20" in text
    assert "nothing of element 7 is delivered" in text


async def test_a_worker_not_reached_leaves_its_pause_unknown_and_the_report_says_so(
    store: MemoryStateStore,
) -> None:
    unreachable = settings().model_copy(update={"ops": OpsSettings(port=9)})  # discard: nothing answers
    report = await element_report(unreachable, 7)
    assert report.problems == []
    text = shown(report)
    assert "Worker at http://127.0.0.1:9 not reachable" in text
    assert "No problems found; whether the worker is paused is not known" in text


async def test_an_element_the_store_never_saw_is_no_problem(store: MemoryStateStore) -> None:
    report = await element_report(settings(), 4711)
    assert (report.seen, report.deliveries, report.parked, report.lease, report.problems) == (False, [], [], None, [])
    assert "never seen element 4711" in shown(report)


async def test_a_parked_element_is_a_problem_for_each_channel_configured_or_not(store: MemoryStateStore) -> None:
    now = story(publication(70, 1, **READY))
    await store.record(delivered(now, "web", 70))
    await store.mark_element(ElementMark(7, T0, 3, deleted=False, fetched_at=T0.timestamp()))
    await store.park(7, "web", "HTTP 401 from the CMS")
    await store.park(7, "old-web", "circuit open")
    await store.park(8, "print", "another element's")
    store.leases[7] = LeaseRecord(LeaseOwner.of_process(os.getpid()).encode(), time.time() + 60)
    report = await element_report(settings(), 7)
    assert report.seen and (report.synced_modification_date, report.synced_version, report.fetch_started_at) == (
        T0,
        3,
        T0,
    )
    assert [(p.channel, p.configured) for p in report.parked] == [("web", True), ("old-web", False)]
    assert [p.split(" since ")[0] for p in report.problems] == ["parked for web", "parked for old-web"]
    assert report.lease is not None and report.lease.held
    text = shown(report)
    assert "Parked for web since" in text and "Parked for old-web (not configured)" in text
    assert f"held now by pid {os.getpid()}" in text and "Problems" in text


async def test_kordiam_is_asked_only_with_its_settings(store: MemoryStateStore) -> None:
    with pytest.raises(TypeError):
        await element_report(settings(), 7, kordiam=True)


async def test_kordiam_out_of_reach_is_one_line() -> None:
    kordiam = KordiamCommandSettings(
        queue={"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"},
        channels=[WEB.model_dump()],
        kordiam={"base_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s3cret-value"},
    )
    with pytest.raises(AdminError, match=r"^Kordiam http://127\.0\.0\.1:9: cannot fetch element 7: "):
        await fetch_element(kordiam, 7)


def test_a_channel_failing_now_is_a_problem_naming_what_becomes_of_the_element_and_the_requeue() -> None:
    failing = ElementWorker("http://127.0.0.1:9090", True, failing={"web": "failing now (circuit breaker open)"})
    report = replace(full_report(), kordiam=None, worker=failing)
    assert report.problems == [
        "channel web: failing now (circuit breaker open): what it would be given of element 7 is parked, not "
        "delivered, until it accepts calls again (`kordiam-bridge parked requeue --channel web` once it is fixed)"
    ]
    assert "Worker at http://127.0.0.1:9090: taking messages" in shown(report)


FAILING = {"web": "failing now (circuit breaker open)", "print": "failing now (credentials refused: HTTP 401)"}


@pytest.fixture
def both_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker at [ops] takes messages while web's breaker is open and print refuses the bridge's credentials."""

    async def worker_view(_: StatusSettings) -> ElementWorker:
        return ElementWorker("http://127.0.0.1:9090", True, failing=dict(FAILING))

    monkeypatch.setattr(element_module, "worker_view", worker_view)


def failing_problem(channel: str) -> str:
    return (
        f"channel {channel}: {FAILING[channel]}: what it would be given of element 7 is parked, not delivered, until "
        f"it accepts calls again (`kordiam-bridge parked requeue --channel {channel}` once it is fixed)"
    )


async def test_a_failing_channel_the_element_is_not_known_to_go_to_is_context_not_a_problem(
    store: MemoryStateStore, both_failing: None
) -> None:
    await store.record(delivered(story(publication(70, 1, **READY)), "web", 70))
    report = await element_report(settings(), 7)
    assert report.problems == [failing_problem("web")]
    assert [(f.channel, f.goes, f.known_from) for f in report.failing_channels] == [
        ("web", True, "deliveries"),
        ("print", None, None),
    ]
    text = shown(report)
    [context] = [line for line in text.splitlines() if line.startswith("Channel print")]
    assert context.startswith("Channel print: failing now (credentials refused: HTTP 401); ")
    assert "whether element 7 goes to it is not known without --kordiam" in context
    assert "parked requeue" not in context
    data = json.loads(to_json(report))
    assert data["problems"] == [failing_problem("web")]
    assert [(f["channel"], f["goes"], f["known_from"]) for f in data["failing_channels"]] == [
        ("web", True, "deliveries"),
        ("print", None, None),
    ]


async def test_work_parked_for_a_failing_channel_says_the_element_goes_there(
    store: MemoryStateStore, both_failing: None
) -> None:
    await store.park(7, "print", "HTTP 401 from the CMS")
    report = await element_report(settings(), 7)
    assert [(f.channel, f.goes, f.known_from) for f in report.failing_channels] == [
        ("web", None, None),
        ("print", True, "parked"),
    ]
    assert report.problems[0] == failing_problem("print")
    assert [p.split(" since ")[0] for p in report.problems[1:]] == ["parked for print"]


def kordiam_settings() -> KordiamCommandSettings:
    return KordiamCommandSettings(
        queue={"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"},
        state={"url": "sqlite:///state.db"},
        channels=[WEB.model_dump(), PRINT.model_dump()],
        ops={"port": 0},
        kordiam={"base_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s3cret-value"},
    )


def kordiam_holds(monkeypatch: pytest.MonkeyPatch, element: Element | None) -> None:
    async def fetch(_: KordiamCommandSettings, element_id: int) -> Element | None:
        assert element_id == 7
        return element

    monkeypatch.setattr(element_module, "fetch_element", fetch)


async def test_with_kordiam_a_failing_channel_is_a_problem_only_where_the_routing_sends_the_element(
    store: MemoryStateStore, both_failing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = story(publication(70, 1, **READY))  # a website publication only: print's platform is 2
    kordiam_holds(monkeypatch, now)
    await store.record(delivered(now, "web", 70))
    report = await element_report(kordiam_settings(), 7, kordiam=True)
    assert report.problems == [failing_problem("web")]
    assert [(f.channel, f.goes, f.known_from) for f in report.failing_channels] == [
        ("web", True, "kordiam"),
        ("print", False, "kordiam"),
    ]
    [context] = [line for line in shown(report).splitlines() if line.startswith("Channel print")]
    assert "element 7 does not go to it" in context and "not known" not in context


async def test_with_kordiam_a_status_filter_holding_every_publication_back_sends_nothing_to_the_channel(
    store: MemoryStateStore, both_failing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kordiam_holds(monkeypatch, story(publication(70, 1, **DRAFT)))
    report = await element_report(kordiam_settings(), 7, kordiam=True)
    assert [(f.channel, f.goes) for f in report.failing_channels] == [("web", False), ("print", False)]
    assert report.problems == []


async def test_with_kordiam_a_withdrawal_or_a_deletion_goes_to_the_channel_that_holds_the_item(
    store: MemoryStateStore, both_failing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    was = story(publication(70, 1, **READY), publication(71, 2))
    await store.record(delivered(was, "print", 71))
    kordiam_holds(monkeypatch, story(publication(70, 1, **DRAFT)))  # 71 left the element: print deletes its item
    withdrawn = await element_report(kordiam_settings(), 7, kordiam=True)
    assert [(f.channel, f.goes) for f in withdrawn.failing_channels] == [("web", False), ("print", True)]
    kordiam_holds(monkeypatch, None)  # deleted in Kordiam
    deleted = await element_report(kordiam_settings(), 7, kordiam=True)
    assert [(f.channel, f.goes) for f in deleted.failing_channels] == [("web", False), ("print", True)]
    assert deleted.problems[0] == failing_problem("print")


async def test_with_kordiam_an_element_deleted_there_goes_to_every_failing_channel_that_searches_for_its_items(
    store: MemoryStateStore, both_failing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next sync of an element deleted in Kordiam searches every channel that finds items (a create whose answer
    # was lost left one no delivery records), holding a delivery there or not: a failing one parks the element.
    newsml = ChannelSettings(name="print", type="newsml", platforms=[2], target="file:///tmp/print-newsml")
    kordiam = kordiam_settings().model_copy(update={"channels": [WEB, newsml]})
    kordiam_holds(monkeypatch, None)
    report = await element_report(kordiam, 7, kordiam=True)
    assert [(f.channel, f.goes) for f in report.failing_channels] == [("web", False), ("print", True)]
    assert report.problems == [failing_problem("print")]
    assert json.loads(to_json(report))["kordiam"]["searched"] == ["print"]


async def test_a_worker_taking_messages_is_said_of_that_worker_only_not_of_any_other(
    store: MemoryStateStore, both_failing: None
) -> None:
    [line] = [line for line in shown(await element_report(settings(), 7)).splitlines() if line.startswith("Worker")]
    assert line.startswith("Worker at http://127.0.0.1:9090: taking messages")
    assert "only this worker process was asked" in line and "not asked" in line


# --- what it prints


def shown(report: ElementReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    render_element(report, console)
    return console.export_text()


def full_report() -> ElementReport:
    now = story(publication(70, 1, **READY), publication(71, 2))
    held = record(
        replace(delivered(now, "web", 70), external_id="[red]post-70", edit_link="https://cms/edit/70"),
        delivered(story(publication(71, 2), title="old"), "print", 71),
        mark=ElementMark(7, T0, 3, deleted=False, fetched_at=T0.timestamp()),
        lease=LeaseRecord("t/-/4242/-", time.time() - 5),
    )
    kordiam = compare(now, 7, held, [WEB, PRINT], "kordiam-bridge replay --config b.toml 7")
    dead = ElementDeadLetters("https://sqs/dlq", [], 1000, more=True)
    return element_module.build_report(held, settings(), [], dead, kordiam)


def test_the_report_shows_the_mark_deliveries_lease_dead_letters_and_the_comparison() -> None:
    report = full_report()
    text = shown(report)
    assert "last synced" in text and "2026-03-01T09:30:00+00:00, version 3" in text
    assert "[red]post-70" in text  # ids from the store are shown as they are, never read as markup
    assert short_fingerprint(report.deliveries[0].fingerprint) in text and "2:" in text
    assert "https://cms/edit/70" in text
    assert "Lease: free (the last, pid 4242's, expired at" in text
    assert "Dead letters: none among the 1000 looked at" in text and "raise --scan-limit" in text
    assert "would be sent again" in text and "in line" in text
    assert "Re-sync it: kordiam-bridge replay --config b.toml 7" in text
    assert report.problems == ["print, publication 71: would be sent again"]


def test_a_fingerprint_is_shortened_to_its_prefix_and_ten_digits() -> None:
    assert short_fingerprint("2:0123456789abcdef") == "2:0123456789…"
    assert short_fingerprint("0123456789") == "0123456789"


def test_what_a_peer_answered_is_printed_with_its_control_characters_escaped() -> None:
    # A parked reason (a channel's answer), Kordiam's error, a dead-letter look's error and /readyz's reason are
    # quoted as they came: before, their escape sequences reached the operator's terminal raw.
    hostile = "answered \x1b[2J\x1b]0;owned\x07 [bold]x[/bold]\x9b31m"
    report = full_report()
    assert report.kordiam is not None and report.dead_letters is not None
    report = replace(
        report,
        parked=[ElementParked("web", T0, 60, f"web: {hostile}")],
        kordiam=replace(report.kordiam, error=f"kordiam: {hostile}"),
        dead_letters=replace(report.dead_letters, error=f"dlq: {hostile}"),
        worker=ElementWorker("http://127.0.0.1:9090", reachable=True, paused=f"paused: {hostile}"),
    )
    text = shown(report)
    assert not any(control in text for control in "\x1b\x07\x9b"), text
    for who in ("web", "kordiam", "dlq", "paused"):
        assert f"{who}: answered \\x1b[2J\\x1b]0;owned\\x07 [bold]x[/bold]\\x9b31m" in text


def test_the_report_as_json_names_its_problems_and_whether_a_look_was_partial() -> None:
    data = json.loads(to_json(full_report()))
    assert data["problems"] == ["print, publication 71: would be sent again"]
    assert data["dead_letters"]["partial"] is True
    assert {c["verdict"] for c in data["kordiam"]["checks"]} == {IN_LINE, NOT_EXPORTED, SENT_AGAIN}
    assert data["deliveries"][0]["recorded_at"] == T0.isoformat()


def test_a_look_at_only_what_the_broker_paged_in_is_partial_and_says_so() -> None:
    dead = ElementDeadLetters("stomp://127.0.0.1:61613/queue/dlq", [], 2, more=False, paged_in=PagedIn(2, 3))
    report = replace(full_report(), dead_letters=dead)
    assert dead.partial
    text = shown(report)
    assert "Dead letters: none among the 2 looked at" in text and "raise --scan-limit" not in text
    assert (
        "Dead letters looked at: showing 2 of 3 (the broker pages in only part of a deep queue: run again once these "
        "are handled)"
    ) in text
    data = json.loads(to_json(report))["dead_letters"]
    assert data["paged_in"] == {"seen": 2, "size": 3} and data["partial"] is True
    assert json.loads(to_json(full_report()))["dead_letters"]["paged_in"] is None


def test_a_held_back_fifo_look_is_partial_too() -> None:
    assert ElementDeadLetters("q.fifo", [], 10, more=False, held_back=3).partial
    assert not ElementDeadLetters("q", [], 10, more=False).partial


def test_an_element_deleted_in_kordiam_says_so() -> None:
    report = replace(full_report(), kordiam=compare(None, 7, record(), [WEB], "r"))
    assert "deleted" in shown(report) and "No channel holds an item of it" in shown(report)
    assert report.problems == []
    recorded = replace(report, deleted=True, synced_modification_date=None)
    assert "yes (seen deleted in Kordiam)" in shown(recorded)


async def test_a_dead_letter_queue_that_cannot_be_reached_is_a_problem_and_the_store_is_still_reported(
    store: MemoryStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen by hand: with SQS down, `element 1001 --dlq` said only "configuration error: queue.endpoint_url: cannot
    reach SQS" (exit 2), and none of what the state store knew of the element."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    now = story(publication(70, 1, **READY))
    await store.record(delivered(now, "web", 70))
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    down = settings().model_copy(
        update={"queue": QueueSettings(url=f"{endpoint}/123456789012/q", endpoint_url=endpoint, region="eu-central-1")}
    )

    report = await element_report(down, 7, dead_letters=True)

    assert [d.channel for d in report.deliveries] == ["web"]
    assert report.dead_letters is not None and report.dead_letters.error is not None
    [problem] = report.problems
    assert problem.startswith("dead letters not looked at: queue.endpoint_url: cannot reach SQS")
    assert "Dead letters: not looked at: queue.endpoint_url: cannot reach SQS" in shown(report)


async def test_kordiam_out_of_reach_is_a_problem_and_the_store_is_still_reported(store: MemoryStateStore) -> None:
    """Seen by hand: with Kordiam down, `element 1001 --kordiam` (the runbook's line for "story N is not on the
    website") printed only "Kordiam …: cannot fetch element 1001" (exit 1), none of what the store knew of it."""
    now = story(publication(70, 1, **READY))
    await store.record(delivered(now, "web", 70))
    kordiam = KordiamCommandSettings(
        queue={"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"},
        state={"url": "sqlite:///state.db"},
        channels=[WEB.model_dump()],
        ops={"port": 0},
        kordiam={"base_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s3cret-value"},
    )

    report = await element_report(kordiam, 7, kordiam=True)

    assert [d.channel for d in report.deliveries] == ["web"]
    [problem] = report.problems
    assert problem.startswith("not compared with Kordiam: Kordiam http://127.0.0.1:9: cannot fetch element 7: ")
    text = shown(report)
    assert "In Kordiam now: not known: Kordiam http://127.0.0.1:9: cannot fetch element 7" in text
    assert "In Kordiam now: deleted" not in text


async def test_kordiam_out_of_reach_a_failing_channel_the_store_delivered_to_is_still_a_problem(
    store: MemoryStateStore, both_failing: None
) -> None:
    # Kordiam not answering decides no routing: what the store holds does (web delivered, print unknown).
    now = story(publication(70, 1, **READY))
    await store.record(delivered(now, "web", 70))
    kordiam = KordiamCommandSettings(
        queue={"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"},
        state={"url": "sqlite:///state.db"},
        channels=[WEB.model_dump(), PRINT.model_dump()],
        kordiam={"base_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s3cret-value"},
    )

    report = await element_report(kordiam, 7, kordiam=True)

    assert [(f.channel, f.goes, f.known_from) for f in report.failing_channels] == [
        ("web", True, "deliveries"),
        ("print", None, None),
    ]
    assert any(problem.startswith("channel web: failing now (circuit breaker open)") for problem in report.problems)
