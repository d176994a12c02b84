"""The message handler: decoding, the log context of a message, and the outcome it returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from bridge.errors import KordiamCredentialsRefused
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.credentials import KordiamCredentials
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.notification import Notification
from bridge.pipeline.sync import Failure, SyncFailed, SyncReport
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import DeadLetter, Done
from bridge.queue.transport import QueueMessage
from tests.support import http_answering


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
