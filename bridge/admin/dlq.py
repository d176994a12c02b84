"""``kordiam-bridge dlq list`` and ``dlq show``: read the dead-letter queue without consuming it, on any backend
(``bridge.queue.QueueAdmin.peek``); the lookup by id ``dlq delete`` shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from bridge import redaction
from bridge.admin.progress import ProgressSink
from bridge.admin.results import FIFO_HELD_BACK, DlqListing, DlqMessage, ElementDeadLetters, paged_in_note
from bridge.config import QueueSettings, is_fifo_url
from bridge.errors import AdminError
from bridge.pipeline.notification import PoisonMessage, decode_notification
from bridge.queue import QueueAdmin, open_queue_admin
from bridge.queue.dead_letter import FailureContext
from bridge.queue.transport import PagedIn, PeekedMessage, QueueDepth, QueueMessage

log = structlog.get_logger("bridge.admin")


async def dlq_list(settings: QueueSettings, *, limit: int = 50, progress: ProgressSink | None = None) -> DlqListing:
    async with open_queue_admin(settings) as queue:
        return await list_dead_letters(queue, limit=limit, progress=progress)


async def dlq_show(
    settings: QueueSettings, message_id: str, *, scan_limit: int = 1000, progress: ProgressSink | None = None
) -> DlqMessage | None:
    async with open_queue_admin(settings) as queue:
        return await find_dead_letter(queue, message_id, scan_limit=scan_limit, progress=progress)


async def list_dead_letters(queue: QueueAdmin, *, limit: int, progress: ProgressSink | None = None) -> DlqListing:
    """Up to ``limit`` dead letters, oldest first, without consuming any. Where the broker gives no depth, the
    listing counts what it saw (plus one when there are more).

    ``truncated`` (the "raise --limit" hint) only when the limit stopped the listing and the queue holds more. A
    listing short of its limit saw the whole queue, whatever the depth says: SQS's is approximate, read before the
    listing, and lags (it still counts dead letters just redriven or deleted, for a while). On a FIFO queue, though,
    a look reaches only the first messages of each message group (``_held_back``): ``held_back`` says about how
    many it could not reach; and an ActiveMQ browse sees only what the broker has paged into memory: ``paged_in``
    says so when it saw fewer than the broker's statistics count.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    url, depth, peeked, more = await _look(queue, limit=limit, progress=progress, task="reading the dead-letter queue")
    messages = sorted(map(to_dlq_message, peeked), key=_oldest_first)
    at_limit = len(messages) >= limit
    if depth.visible is None:
        return DlqListing(url, messages, len(messages) + (1 if more else 0), 0, truncated=at_limit and more)
    truncated = at_limit and len(messages) < depth.visible
    held_back = _held_back(url, depth, len(messages), more)
    paged_in = PagedIn.of(len(messages), more, depth.visible) if depth.browsed else None
    return DlqListing(url, messages, depth.visible, depth.in_flight or 0, truncated, held_back, paged_in)


async def find_dead_letter(
    queue: QueueAdmin, message_id: str, *, scan_limit: int, progress: ProgressSink | None = None
) -> DlqMessage | None:
    """The dead letter with this id (``is_named``); None if not found.

    ``AdminError`` when the search stopped at ``scan_limit`` without finding it: the queue holds more than were
    looked at, so "not found" would tell the operator it is gone when it may be further on; so too when a FIFO
    queue held some back behind those looked at in their message group (``not_found_beyond``)."""
    url, depth, peeked, more = await _look(
        queue,
        limit=scan_limit,
        progress=progress,
        task="searching the dead-letter queue",
        until=lambda p: is_named(to_dlq_message(p), message_id),
    )
    found = next((m for m in map(to_dlq_message, peeked) if is_named(m, message_id)), None)
    if found is None and (beyond := not_found_beyond(message_id, url, depth, len(peeked), more, scan_limit)):
        raise AdminError(beyond)
    return found


def is_named(message: DlqMessage, message_id: str) -> bool:
    """Whether ``message_id`` names this dead letter: its own id (``dlq list``), or the id the message had on the
    main queue (``failure.source_message_id``, the ``message_id`` of its ``dead_lettered`` log line)."""
    source = message.failure.source_message_id if message.failure else None
    return message_id in (message.message_id, source)


def not_found_beyond(
    message_id: str, url: str, depth: QueueDepth, looked_at: int, more: bool, scan_limit: int
) -> str | None:
    """Why a look that did not find ``message_id`` cannot say it is not there: the dead-letter queue may hold more
    than the ``looked_at`` seen (the scan limit stopped the look, a FIFO queue held some back behind them in their
    message group, or the broker showed a browser only what it had paged in); None when the look saw the whole
    queue."""
    if more:
        return (
            f"dead letter {message_id} is not among the first {looked_at} looked at, and the dead-letter queue may "
            f"hold more: raise --scan-limit (now {scan_limit})"
        )
    held_back = _held_back(url, depth, looked_at, more)
    if held_back:
        return f"dead letter {message_id} is not among the {looked_at} looked at, and about {held_back} more " + (
            FIFO_HELD_BACK
        )
    if depth.browsed and (paged_in := PagedIn.of(looked_at, more, depth.visible)):
        return f"dead letter {message_id} is not among the {looked_at} looked at: {paged_in_note(paged_in)}"
    return None


async def dead_letters_of(
    queue: QueueAdmin, element_id: int, *, scan_limit: int, progress: ProgressSink | None = None
) -> ElementDeadLetters:
    """The dead letters about ``element_id`` (``element_of``) among the first ``scan_limit`` of the dead-letter
    queue, oldest first, without consuming any; ``partial`` when the queue may hold more than were looked at (the
    limit stopped the look, a FIFO queue held some back behind them in their message group, or the broker showed a
    browser only what it had paged in)."""
    url, depth, peeked, more = await _look(
        queue, limit=scan_limit, progress=progress, task="searching the dead-letter queue"
    )
    found = sorted((m for m in map(to_dlq_message, peeked) if m.element_id == element_id), key=_oldest_first)
    held_back = _held_back(url, depth, len(peeked), more)
    paged_in = PagedIn.of(len(peeked), more, depth.visible) if depth.browsed else None
    return ElementDeadLetters(url, found, len(peeked), more, held_back, paged_in=paged_in)


async def _look(
    queue: QueueAdmin,
    *,
    limit: int,
    progress: ProgressSink | None,
    task: str,
    until: Callable[[PeekedMessage], bool] | None = None,
) -> tuple[str, QueueDepth, list[PeekedMessage], bool]:
    """One look at the dead-letter queue, consuming nothing (``start_look``), then up to ``limit`` dead letters
    (stopping at the first ``until``) and whether it holds more than were looked at."""
    url, depth = await start_look(queue, limit=limit, progress=progress, task=task)
    peeked, more = await queue.peek(url, limit=limit, until=until, progress=progress)
    return url, depth, peeked, more


async def start_look(
    queue: QueueAdmin, *, limit: int, progress: ProgressSink | None, task: str
) -> tuple[str, QueueDepth]:
    """What every look at the dead-letter queue begins with: its url and depth (read first, and the warning a look
    there may call for), and the progress bar of a look at up to ``limit`` of them."""
    url = await queue.dead_letter_url()
    depth = await queue.depth(url)
    _warn_if_looks_move_them_on(url, depth)
    if progress is not None and depth.visible is not None:
        progress.start(task, min(limit, depth.visible))
    return url, depth


def to_dlq_message(peeked: PeekedMessage) -> DlqMessage:
    """A dead letter as the operator sees it: its failure context decoded, and the element it is about. Its
    attributes are shown without the process's secrets, as its failure context is (``FailureContext.parse``): a
    dead letter written before its reason was redacted holds them in ``failure.reason``."""
    message = peeked.message
    return DlqMessage(
        message_id=message.message_id,
        body=message.body,
        attributes={name: redaction.SECRETS.redact(value) for name, value in message.attributes.items()},
        system_attributes=peeked.broker_attributes,
        system_attributes_title=peeked.broker_attributes_title,
        sent_at=datetime.fromtimestamp(message.sent_at, UTC) if message.sent_at is not None else None,
        receive_count=message.receive_count,
        group_id=message.group_id,
        element_id=element_of(message),
        failure=FailureContext.parse(message.attributes),
        body_is_utf8=message.raw_body is None,
    )


def element_of(message: QueueMessage) -> int | None:
    """The element a dead letter is about: its ``failure.element_id``, else what its body names; None when
    neither says (an odd body never breaks a listing)."""
    failure = FailureContext.parse(message.attributes)
    if failure is not None and failure.element_id is not None:
        return failure.element_id
    try:
        return decode_notification(message.body, message.attributes).element_id
    except PoisonMessage as poison:  # the id may be readable when the rest is not
        return poison.element_id
    except Exception:  # anything else an odd body raises
        return None


def _oldest_first(message: DlqMessage) -> tuple[bool, datetime]:
    return (message.sent_at is None, message.sent_at or datetime.min.replace(tzinfo=UTC))


def _held_back(url: str, depth: QueueDepth, seen: int, more: bool) -> int:
    """About how many dead letters a look at a FIFO queue that saw ``seen`` and ended by itself (not ``more``)
    could not reach: SQS hands out no message of a group while an earlier one is held, so the look meets the first
    ones of each group (up to ten, one receive's worth), then nothing. From the depth read before the look, so
    approximate; 0 on any other queue, where a look that ends by itself has seen them all."""
    if more or depth.visible is None or not is_fifo_url(url):
        return 0
    return max(0, depth.visible - seen)


def _warn_if_looks_move_them_on(url: str, depth: QueueDepth) -> None:
    """A dead-letter queue with a redrive policy of its own counts each look at a dead letter as a receive: after
    its maxReceiveCount looks, SQS moves the dead letter on to that policy's target, out of the bridge's sight."""
    if not depth.redrive_policy:
        return
    try:
        policy = json.loads(depth.redrive_policy)
        looks, target = policy.get("maxReceiveCount"), policy.get("deadLetterTargetArn")
    except (ValueError, AttributeError):
        looks, target = None, None
    log.warning(
        "dead_letter_queue_has_redrive_policy",
        queue=url,
        reason=(
            f"each look counts as a receive: after {looks or 'maxReceiveCount'} looks SQS moves a dead letter on to "
            f"{target or 'its target'}; remove the policy from the dead-letter queue"
        ),
    )
