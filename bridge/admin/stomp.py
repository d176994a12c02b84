"""``dlq list``, ``dlq show`` and ``dlq redrive`` on ActiveMQ: the dead-letter queue read through a STOMP queue
browser, and moved back by receive, confirmed SEND, then ACK (``StompTransport.redrive_dead_letters``).

ActiveMQ Classic answers no depth query over STOMP, so a listing counts what the browser saw: ``approximate_visible``
is the number browsed (up to the limit, plus one to tell whether there are more), ``approximate_in_flight`` is 0
(a message a consumer holds is not shown to a browser).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog

from bridge.admin.results import DlqListing, DlqMessage, MovedMessage, RedriveFailure, RedriveResult
from bridge.admin.sqs import element_from_body
from bridge.config import QueueSettings
from bridge.queue.dead_letter import FailureContext
from bridge.queue.stomp import StompTransport
from bridge.queue.transport import QueueMessage

log = structlog.get_logger("bridge.admin")


async def dlq_list_on_broker(settings: QueueSettings, *, limit: int) -> DlqListing:
    """Up to ``limit`` dead letters, oldest first, without consuming any."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    messages, more = await _browse(settings, limit=limit)
    assert settings.dlq_url is not None  # a stomp:// queue requires it
    listed = sorted((to_dlq_message(m) for m in messages), key=_oldest_first)
    return DlqListing(settings.dlq_url, listed, len(listed) + (1 if more else 0), 0, truncated=more)


async def dlq_show_on_broker(settings: QueueSettings, message_id: str, *, scan_limit: int) -> DlqMessage | None:
    """The dead letter with this id (its broker message id or ``failure.source_message_id``); None if not found."""
    messages, _ = await _browse(settings, limit=scan_limit)
    for message in map(to_dlq_message, messages):
        source = message.failure.source_message_id if message.failure else None
        if message_id in (message.message_id, source):
            return message
    return None


async def _browse(settings: QueueSettings, *, limit: int) -> tuple[list[QueueMessage], bool]:
    async with StompTransport.connect(settings, consume=False) as transport:
        return await transport.browse_dead_letters(limit=limit)


def to_dlq_message(message: QueueMessage) -> DlqMessage:
    failure = FailureContext.parse(message.attributes)
    element_id = failure.element_id if failure and failure.element_id is not None else None
    if element_id is None:
        element_id = element_from_body(message.body, message.attributes)
    return DlqMessage(
        message_id=message.message_id,
        body=message.body,
        attributes=message.attributes,
        system_attributes={},
        sent_at=datetime.fromtimestamp(message.sent_at, UTC) if message.sent_at is not None else None,
        receive_count=message.receive_count,
        group_id=message.group_id,
        element_id=element_id,
        failure=failure,
    )


def _oldest_first(message: DlqMessage) -> tuple[bool, datetime]:
    return (message.sent_at is None, message.sent_at or datetime.min.replace(tzinfo=UTC))


async def dlq_redrive_on_broker(
    settings: QueueSettings,
    *,
    limit: int | None,
    element_ids: Iterable[int] | None,
    native: bool | None,
    stop: asyncio.Event | None = None,
) -> RedriveResult:
    """Dead letters back to the main queue, never losing one (ACKed only after the broker confirmed the copy)."""
    if native:
        raise ValueError("--native: ActiveMQ has no move task over STOMP; leave it out to copy and acknowledge")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    wanted_ids = None if element_ids is None else set(element_ids)

    def wanted(message: QueueMessage) -> bool:
        return wanted_ids is None or to_dlq_message(message).element_id in wanted_ids

    assert settings.dlq_url is not None  # a stomp:// queue requires it
    async with StompTransport.connect(settings, consume=False) as transport:
        tried, left, arrived = await transport.redrive_dead_letters(limit=limit, wanted=wanted, stop=stop)
    interrupted = stop is not None and stop.is_set()
    result = RedriveResult(
        "manual", settings.dlq_url, settings.url, skipped=left, arrived=arrived, interrupted=interrupted
    )
    for message, send_id, error in tried:
        if send_id is None:
            result.failed.append(RedriveFailure(message.message_id, error or "not confirmed by the broker"))
        else:
            result.moved.append(MovedMessage(message.message_id, send_id, to_dlq_message(message).element_id))
    log.info("redriven", queue=settings.dlq_url, moved=len(result.moved), failed=len(result.failed), left=left)
    return result
