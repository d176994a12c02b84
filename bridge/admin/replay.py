"""``kordiam-bridge replay``: send a resync notification for each element id, on any backend
(``bridge.queue.QueueAdmin.send``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import INTERRUPTED, ReplayedElement, ReplayResult
from bridge.config import QueueSettings
from bridge.pipeline.notification import resync_notification
from bridge.queue import open_queue_admin
from bridge.queue.transport import MAX_BATCH, OutgoingMessage

log = structlog.get_logger("bridge.admin")


async def replay(
    settings: QueueSettings,
    element_ids: Sequence[int],
    *,
    event: str = "updated",
    force: bool = False,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> ReplayResult:
    """Enqueue a fresh notification per element, as Kordiam would (``{"id": N, "event": …}``).

    The worker then writes a channel only where the element changed since it last wrote it (else its outcome is
    ``unchanged``); ``force`` marks the notifications so that it rewrites every channel of the element. Once
    ``stop`` is set (Ctrl-C) no further batch is sent: the result lists what was, and the rest as not enqueued.
    """
    ids = replay_ids(element_ids)
    progress = progress or NoProgress()
    progress.start(f"replaying {len(ids)} element(s)", len(ids))
    results: list[ReplayedElement] = []
    async with open_queue_admin(settings) as queue:
        await queue.ensure_usable()
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]
            if stop is not None and stop.is_set():
                results.extend(ReplayedElement(e, None, INTERRUPTED) for e in ids[start:])
                break
            messages = []
            for element_id in chunk:
                body, attributes = resync_notification(element_id, source="replay", event=event, force=force)
                messages.append(OutgoingMessage(body, attributes, group_id=str(element_id)))
            outcomes = await queue.send(messages)
            results.extend(ReplayedElement(e, o.message_id, o.error) for e, o in zip(chunk, outcomes, strict=True))
            progress.advance(len(chunk))
    sent = sum(r.error is None for r in results)
    (log.info if sent == len(results) else log.warning)("replayed", queue=settings.url, sent=sent, total=len(results))
    return ReplayResult(settings.url, results)


def replay_ids(element_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(element_ids))
    for element_id in ids:
        if isinstance(element_id, bool) or not isinstance(element_id, int) or element_id <= 0:
            raise ValueError(f"element ids are positive integers, not {element_id!r}")
    return ids
