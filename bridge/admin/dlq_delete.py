"""``kordiam-bridge dlq delete``: drop the named dead letters that should never be retried (a malformed
notification: redriving it only fails again), on any backend (``bridge.queue.QueueAdmin.delete_dead_letters``).

The ids are those ``dlq show`` takes, looked up the same way (``bridge.admin.dlq``); each deletion is logged
(``dead_letter_deleted``), so the record of what happened survives the message."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from bridge.admin.dlq import is_named, not_found_beyond, start_look, to_dlq_message
from bridge.admin.progress import ProgressSink
from bridge.admin.results import DlqDeleteResult, DlqDeletion, DlqMessage
from bridge.config import QueueSettings
from bridge.queue import QueueAdmin, open_queue_admin
from bridge.queue.transport import PeekedMessage, QueueDepth

log = structlog.get_logger("bridge.admin")


async def dlq_delete(
    settings: QueueSettings,
    message_ids: Sequence[str],
    *,
    delete: bool,
    scan_limit: int = 1000,
    progress: ProgressSink | None = None,
) -> DlqDeleteResult:
    async with open_queue_admin(settings) as queue:
        return await delete_dead_letters(queue, message_ids, delete=delete, scan_limit=scan_limit, progress=progress)


async def delete_dead_letters(
    queue: QueueAdmin,
    message_ids: Sequence[str],
    *,
    delete: bool,
    scan_limit: int,
    progress: ProgressSink | None = None,
) -> DlqDeleteResult:
    """Find the dead letter each of ``message_ids`` names among the first ``scan_limit`` (``is_named``) and, with
    ``delete``, delete those and nothing else; without, delete nothing. An id that is a dead letter's own names that
    one, though another came first whose original message had that id (the bridge dead-lettered a message SQS then
    moved itself): where the main queue may do that (``moves_failed_messages``), the look goes on past such a
    match, to the end, and the first one found serves only when no dead letter has the id as its own; where it
    cannot, the look stops once every id is found. An id found nowhere, or beyond what was looked at
    (``not_found_beyond``), is reported in its ``DlqDeletion``."""
    wanted = list(dict.fromkeys(message_ids))
    own: dict[str, DlqMessage] = {}
    as_source: dict[str, DlqMessage] = {}
    task = "deleting dead letters" if delete else "searching the dead-letter queue"
    # First, as every dlq command: a queue that does not exist is a configuration error naming queue.url.
    url, depth = await start_look(queue, limit=scan_limit, progress=progress, task=task)
    original_may_follow = moves_failed_messages(await queue.depth(queue.url))

    def look(peeked: PeekedMessage) -> bool:
        """Notes what ``peeked`` is named by; True (stop) once every id names a dead letter as its own, or by its
        original where that original cannot be a dead letter too."""
        message = to_dlq_message(peeked)
        for message_id in wanted:
            if message.message_id == message_id:
                own.setdefault(message_id, message)
            elif is_named(message, message_id):
                as_source.setdefault(message_id, message)
        return all(i in own or (i in as_source and not original_may_follow) for i in wanted)

    def named() -> dict[str, DlqMessage]:
        return {i: m for i in wanted if (m := own.get(i) or as_source.get(i)) is not None}

    def chosen(peeked: PeekedMessage) -> bool:
        """Asked once the look has ended."""
        return peeked.message.message_id in {message.message_id for message in named().values()}

    def logged(peeked: PeekedMessage) -> None:
        """As the queue confirms it: a run cut short (Ctrl-C) keeps the record of each one it deleted."""
        message = to_dlq_message(peeked)
        log.info(
            "dead_letter_deleted",
            queue=url,
            message_id=message.message_id,
            element_id=message.element_id,
            stage=message.failure.stage if message.failure else None,
            reason=message.failure.reason if message.failure else None,
        )

    if delete:
        outcome = await queue.delete_dead_letters(
            limit=scan_limit, chosen=chosen, until=look, progress=progress, on_deleted=logged
        )
        seen, more, deleted, failed = outcome.seen, outcome.more, set(outcome.deleted), outcome.failed
    else:
        seen, more = await queue.peek(url, limit=scan_limit, until=look, progress=progress)
        deleted, failed = set(), {}
    found = named()
    deletions: list[DlqDeletion] = []
    for message_id in wanted:
        message = found.get(message_id)
        if message is None:
            beyond = not_found_beyond(message_id, url, depth, len(seen), more, scan_limit)
            deletions.append(DlqDeletion(message_id, None, False, beyond or f"no dead letter {message_id} found"))
        elif message.message_id in failed:
            reason = failed[message.message_id]
            deletions.append(
                DlqDeletion(message_id, message, False, f"dead letter {message.message_id} not deleted: {reason}")
            )
        else:
            deletions.append(DlqDeletion(message_id, message, message.message_id in deleted))
    return DlqDeleteResult(url, not delete, deletions)


def moves_failed_messages(main: QueueDepth) -> bool:
    """Whether the main queue (its ``depth``) may move a failed message to the dead-letter queue itself, under its
    own id: an SQS queue with a redrive policy; ActiveMQ may (the broker's redelivery policy). Only then can a dead
    letter's original be a dead letter too."""
    return main.browsed or main.redrive_policy is not None
