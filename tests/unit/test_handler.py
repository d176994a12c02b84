"""The message handler: decoding, the log context of a message, and the outcome it returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.notification import Notification
from bridge.pipeline.sync import SyncReport
from bridge.queue.outcome import DeadLetter, Done
from bridge.queue.transport import QueueMessage


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
