"""The message handler: decoding, the log context of a message, and the outcome it returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from bridge.errors import ChannelRejected, ChannelUnavailable, KordiamCredentialsRefused
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.credentials import KordiamCredentials
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.notification import Notification
from bridge.pipeline.sync import Failure, SyncFailed, SyncReport
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import DeadLetter, Done, Retry
from bridge.queue.transport import QueueMessage
from tests.support import http_answering
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication, sync_engine


class RecordingEngine:
    """Stands in for the sync engine; keeps the log context each sync ran with."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    async def sync(self, notification: Notification) -> SyncReport:
        self.contexts.append(structlog.contextvars.get_contextvars())
        return SyncReport(notification.element_id)


def message(body: str) -> QueueMessage:
    return QueueMessage(
        message_id="m1", receipt_handle="r1", body=body, attributes={}, receive_count=1, sent_at=None, group_id=None
    )


@pytest.fixture(autouse=True)
def clean_log_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


async def test_the_kordiam_event_reaches_the_log_context_under_its_own_key() -> None:
    # structlog names each log line with the "event" key, so a context value under that key would be lost.
    engine = RecordingEngine()
    outcome = await MessageHandler(engine, tracing=False)(message('{"id": 5, "event": "updated"}'))  # type: ignore[arg-type]
    assert isinstance(outcome, Done)
    (context,) = engine.contexts
    assert context["element_id"] == 5 and context["kordiam_event"] == "updated"
    assert "event" not in context


async def test_an_undecodable_body_is_dead_lettered_without_a_sync() -> None:
    engine = RecordingEngine()
    outcome = await MessageHandler(engine, tracing=False)(message("not json"))  # type: ignore[arg-type]
    assert isinstance(outcome, DeadLetter) and outcome.stage == "decode"
    assert engine.contexts == []


class RefusedOnceEngine:
    """Meets a refusal of the worker's Kordiam credentials on its first sync, then succeeds."""

    def __init__(self) -> None:
        self.syncs = 0

    async def sync(self, notification: Notification) -> SyncReport:
        self.syncs += 1
        if self.syncs == 1:
            refused = KordiamCredentialsRefused("GET /elements/5: 401 even with a fresh token", status=401)
            raise SyncFailed(SyncReport(notification.element_id, failures=[Failure("fetch", refused)]))
        return SyncReport(notification.element_id)


async def test_a_refusal_of_the_workers_credentials_pauses_and_the_message_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.pipeline.credentials.FIRST_RETRY_SECONDS", 0.01)
    tokens: list[int] = []

    def kordiam(request: httpx.Request) -> httpx.Response:
        tokens.append(1)
        if len(tokens) < 3:  # the secret is refused twice more, then works again
            return httpx.Response(401, json={"title": "invalid_client", "status": 401})
        return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})

    client = KordiamClient(
        http_answering(kordiam), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("s")
    )
    gate = ReceiveGate()
    credentials = KordiamCredentials(client, gate)
    engine = RefusedOnceEngine()
    handler = MessageHandler(engine, credentials=credentials, tracing=False)  # type: ignore[arg-type]
    try:
        outcome = await handler(message('{"id": 5}'))
    finally:
        await credentials.aclose()
    assert isinstance(outcome, Done)  # neither dead-lettered nor handed back: it waited in hand, then ran
    assert engine.syncs == 2 and len(tokens) == 3
    assert gate.reason is None


# ---- the mapping from a sync's failures to an outcome, on a real engine over in-process fakes ----------------

WEB, PRINT = 99003, 99004


def handler_over(
    kordiam: FakeKordiam, state: MemoryStateStore, *channels: tuple[ScriptedChannel, int]
) -> MessageHandler:
    return MessageHandler(sync_engine(kordiam, state, list(channels)), tracing=False)


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
