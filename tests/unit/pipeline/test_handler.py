"""The message handler: decoding, the log context of a message, and the outcome it returns, on a real sync engine
over in-process fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from bridge.channels import ChannelContext, build_channel
from bridge.channels.base import ChannelResult
from bridge.channels.kordiam_webhook import KordiamWebhookChannel, KordiamWebhookOptions
from bridge.config import ChannelSettings, FeedbackSettings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Publication
from bridge.pipeline.credentials import KordiamCredentials
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import SyncEngine
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import DeadLetter, Done, Retry
from bridge.queue.transport import QueueMessage
from tests.support import http_answering
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication, sync_engine


def message(body: str) -> QueueMessage:
    return QueueMessage(
        message_id="m1", receipt_handle="r1", body=body, attributes={}, receive_count=1, sent_at=None, group_id=None
    )


WEB, PRINT = 99003, 99004


def handler_over(
    kordiam: FakeKordiam, state: MemoryStateStore, *channels: tuple[ScriptedChannel, int]
) -> MessageHandler:
    return MessageHandler(sync_engine(kordiam, state, list(channels)), tracing=False)


@pytest.fixture(autouse=True)
def clean_log_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


class ContextRecordingChannel(ScriptedChannel):
    """Keeps the log context each upsert ran with."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.contexts: list[dict[str, Any]] = []

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        self.contexts.append(structlog.contextvars.get_contextvars())
        return await super().upsert(element, publication, external_id)


async def test_the_kordiam_event_reaches_the_log_context_under_its_own_key() -> None:
    # structlog names each log line with the "event" key, so a context value under that key would be lost.
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    web = ContextRecordingChannel("web")
    outcome = await handler_over(kordiam, state, (web, WEB))(message('{"id": 5, "event": "updated"}'))
    assert isinstance(outcome, Done)
    (context,) = web.contexts
    assert context["element_id"] == 5 and context["kordiam_event"] == "updated"
    assert "event" not in context


async def test_an_undecodable_body_is_dead_lettered_without_a_sync() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    web = ScriptedChannel("web")
    outcome = await handler_over(kordiam, state, (web, WEB))(message("not json"))
    assert isinstance(outcome, DeadLetter) and outcome.stage == "decode" and outcome.error_class == "PoisonMessage"
    assert kordiam.reads == [] and web.upserts == []


async def test_a_poison_notification_whose_id_is_readable_is_dead_lettered_naming_its_element() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    web = ScriptedChannel("web")
    outcome = await handler_over(kordiam, state, (web, WEB))(message('{"elementId": 1003, "event": "exploded"}'))
    assert isinstance(outcome, DeadLetter) and outcome.stage == "decode" and outcome.element_id == 1003
    assert kordiam.reads == [] and web.upserts == []


async def test_a_body_that_is_not_utf8_is_dead_lettered_saying_so() -> None:
    # ActiveMQ carries bytes. Read with U+FFFD for the bad byte, this Latin-1 body would pass for element 5.
    kordiam, state = FakeKordiam(), MemoryStateStore()
    web = ScriptedChannel("web")
    raw = b'{"id": 5, "title": "caf\xe9"}'
    received = QueueMessage("m1", "r1", raw.decode(errors="replace"), {}, 1, None, None, raw_body=raw)
    outcome = await handler_over(kordiam, state, (web, WEB))(received)
    assert isinstance(outcome, DeadLetter) and outcome.stage == "decode" and outcome.error_class == "PoisonMessage"
    assert outcome.reason == "body is not UTF-8: byte 0xe9 at offset 23 (invalid continuation byte)"
    assert kordiam.reads == [] and web.upserts == []


async def test_a_refusal_of_the_workers_credentials_pauses_and_the_message_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.01)
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    kordiam.refuse_tokens = 2  # the message's own fetch meets the first refusal, the pause's first probe the next
    client = kordiam.client()
    gate = ReceiveGate()
    credentials = KordiamCredentials(client, gate)
    web = ScriptedChannel("web")
    engine = SyncEngine(
        kordiam=client,
        routes=[Route(web, frozenset({WEB}))],
        state=state,
        feedback=FeedbackSettings(),
        main_channel="web",
    )
    handler = MessageHandler(engine, credentials=credentials, tracing=False)
    try:
        outcome = await handler(message('{"id": 5}'))
    finally:
        await credentials.aclose()
    assert isinstance(outcome, Done)  # neither dead-lettered nor handed back: it waited in hand, then ran
    assert kordiam.tokens_asked == 3 and web.upserts == [(51, None)]
    assert gate.reason is None


async def test_a_401_that_only_one_elements_request_meets_is_that_messages_failure_not_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kordiam refuses this request even with a fresh token, but takes the token and the platforms: the probe
    passes, so the worker stays open (before: paused again on every run of it, never settled). A 401 speaks of the
    token, never of the element (Kordiam v2 answers 403 or 404 for that): one the probe does not reproduce is a
    token that raced (another replica's grant, reference §3.2), so the message is retried with its reason, not
    dead-lettered on its first receive; the queue dead-letters it once its receives are spent."""
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.01)
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    kordiam.fail_get = 401
    client = kordiam.client()
    gate = ReceiveGate()
    credentials = KordiamCredentials(client, gate)
    engine = SyncEngine(
        kordiam=client,
        routes=[Route(ScriptedChannel("web"), frozenset({WEB}))],
        state=state,
        feedback=FeedbackSettings(),
        main_channel="web",
    )
    handler = MessageHandler(engine, credentials=credentials, tracing=False)
    try:
        async with asyncio.timeout(5):
            outcome = await handler(message('{"id": 5}'))
    finally:
        await credentials.aclose()
    assert isinstance(outcome, Retry)
    assert (outcome.stage, outcome.error_class) == ("fetch", "UnconfirmedRefusal")
    assert "401 even with a fresh token" in outcome.reason and "Kordiam accepts the credentials" in outcome.reason
    assert gate.reason is None and "/platforms" in kordiam.reads  # the probe asked, and found the worker's fine


# ---- the mapping from a sync's failures to an outcome, on a real engine over in-process fakes ----------------


async def test_a_synced_element_is_done() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    assert isinstance(await handler_over(kordiam, state, (ScriptedChannel("web"), WEB))(message('{"id": 5}')), Done)


async def test_a_transient_channel_failure_is_retried_with_its_hint_and_element() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelUnavailable("CMS down", retry_after=42)
    outcome = await handler_over(kordiam, state, (web, WEB))(message('{"id": 5}'))
    assert outcome == Retry(
        delay=42,
        stage="web",
        reason="web: ChannelUnavailable: CMS down",
        error_class="ChannelUnavailable",
        element_id=5,
    )


async def test_a_permanent_failure_is_dead_lettered_with_its_stage_and_reason() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.fail_get = 400
    outcome = await handler_over(kordiam, state, (ScriptedChannel("web"), WEB))(message('{"id": 5}'))
    assert isinstance(outcome, DeadLetter)
    assert (outcome.stage, outcome.error_class, outcome.element_id) == ("fetch", "KordiamRejected", 5)
    assert outcome.reason.startswith("fetch: KordiamRejected: ")


async def test_one_transient_failure_beside_a_permanent_one_makes_the_message_retried() -> None:
    # A retry may still heal the transient part; the permanent one reaches the DLQ once the budget is spent.
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB), publication(52, PRINT))
    web, paper = ScriptedChannel("web"), ScriptedChannel("print")
    web.fail = ChannelRejected("content refused")
    paper.fail = ChannelUnavailable("print system down")
    outcome = await handler_over(kordiam, state, (web, WEB), (paper, PRINT))(message('{"id": 5}'))
    assert isinstance(outcome, Retry)
    assert outcome.stage == "web,print" and outcome.error_class == "ChannelRejected"


class EditorRacingChannel(ScriptedChannel):
    """While the channel writes, an editor removes the publication (or deletes the element) in Kordiam."""

    def __init__(self, name: str, kordiam: FakeKordiam, *, whole_element: bool = False) -> None:
        super().__init__(name)
        self.kordiam = kordiam
        self.whole_element = whole_element

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        result = await super().upsert(element, publication, external_id)
        if self.whole_element:
            self.kordiam.elements.pop(element.id, None)
        else:
            held = self.kordiam.elements[element.id]
            held["publications"] = [p for p in held["publications"] if p["id"] != publication.id]
        return result


@pytest.mark.parametrize("whole_element", [False, True], ids=["publication-removed", "element-deleted"])
async def test_a_publication_gone_from_kordiam_before_its_feedback_is_retried_not_dead_lettered(
    whole_element: bool,
) -> None:
    """Kordiam answers the feedback write 404: the element changed after the fetch. The message did nothing wrong;
    its retry fetches the element again and retracts the item, where a dead letter would page an operator."""
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    web = EditorRacingChannel("web", kordiam, whole_element=whole_element)
    handler = handler_over(kordiam, state, (web, WEB))
    outcome = await handler(message('{"id": 5}'))
    assert isinstance(outcome, Retry) and outcome.stage == "feedback", outcome
    assert 5 not in state.marks  # the stale sync marks nothing: no notification is covered by it
    assert isinstance(await handler(message('{"id": 5}')), Done)
    assert web.deletes == ["web-5-51"] and web.items == {}


async def test_a_feedback_write_answered_410_gone_is_retried_as_a_change_since_the_fetch() -> None:
    # As a 404: the publication went after the fetch (before: dead-lettered as a refusal of the write).
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    kordiam.failing_writes = [410]
    outcome = await handler_over(kordiam, state, (ScriptedChannel("web"), WEB))(message('{"id": 5}'))
    assert isinstance(outcome, Retry) and outcome.stage == "feedback" and outcome.error_class == "ElementChanged"


async def test_a_busy_lease_is_retried() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    state.busy = True
    outcome = await handler_over(kordiam, state, (ScriptedChannel("web"), WEB))(message('{"id": 5}'))
    assert isinstance(outcome, Retry) and outcome.stage == "lease" and outcome.error_class == "ElementBusy"


async def test_a_long_reason_is_cut_to_fit_the_dead_letter_context() -> None:
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    web = ScriptedChannel("web")
    web.fail = ChannelRejected("x" * 2000)
    outcome = await handler_over(kordiam, state, (web, WEB))(message('{"id": 5}'))
    assert isinstance(outcome, DeadLetter) and len(outcome.reason) == 900


async def test_a_receiver_echoing_a_configured_header_leaves_it_out_of_the_dead_letter() -> None:
    # The whole way: a kordiam-webhook channel's X-Api-Key echoed in a 400 → the dead letter's reason (which
    # `dlq show` and `element` print) carries *** instead.
    secret = "hdr-SECRET-0123"
    options = KordiamWebhookOptions.model_validate(
        {"url": "https://cms.example.org/ge", "auth": {"type": "headers", "headers": {"X-Api-Key": secret}}}
    )
    echo = http_answering(lambda request: httpx.Response(400, text=f"bad key {request.headers['X-Api-Key']}"))
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    cms = KordiamWebhookChannel("cms", options, echo, platforms=(WEB,))
    outcome = await MessageHandler(sync_engine(kordiam, state, [(cms, WEB)]), tracing=False)(message('{"id": 5}'))
    assert isinstance(outcome, DeadLetter) and "bad key ***" in outcome.reason
    assert secret not in outcome.reason


async def test_a_dead_letters_reason_carries_no_secret_of_another_service() -> None:
    # The whole way: a kordiam-webhook channel behind a proxy whose error page echoes what other requests carried
    # (the Kordiam token, the website channel's application password without its spaces); neither is this
    # request's own credential, and neither reaches the dead letter's reason.
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.access_token = "kordiam-ACCESS-token-42"
    kordiam.elements[5] = element_body(5, publication(51, WEB))
    page = "502 from proxy; last requests: Bearer kordiam-ACCESS-token-42, password=abcdEFGHijklMNOPqrstUVWX"
    proxy = http_answering(lambda request: httpx.Response(400, text=page))
    context = ChannelContext(http=proxy)
    website = {"url": "https://wp.example.org", "username": "bridge", "app_password": "abcd EFGH ijkl MNOP qrst UVWX"}
    cms = {"url": "https://cms.example.org/ge", "auth": {"type": "bearer", "token": "cms-BEARER-token"}}
    channels = [
        build_channel(
            ChannelSettings.model_validate({"name": name, "type": kind, "platforms": [WEB], **options}), context
        )
        for name, kind, options in (("cms", "kordiam-webhook", cms), ("website", "wordpress", website))
    ]
    handler = MessageHandler(sync_engine(kordiam, state, [(channels[0], WEB)]), tracing=False)
    outcome = await handler(message('{"id": 5}'))
    assert isinstance(outcome, DeadLetter) and "last requests: Bearer ***, password=***" in outcome.reason
