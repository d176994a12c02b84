"""``kordiam-bridge replay``: send a resync notification for each element id, on SQS or ActiveMQ."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import ReplayedElement, ReplayResult
from bridge.admin.sqs import error_text, queue_admin, replay_ids
from bridge.config import QueueSettings
from bridge.pipeline.notification import resync_notification
from bridge.queue import open_transport

log = structlog.get_logger("bridge.admin")


async def replay(
    settings: QueueSettings,
    element_ids: Sequence[int],
    *,
    event: str = "updated",
    force: bool = False,
    progress: ProgressSink | None = None,
) -> ReplayResult:
    if settings.backend == "stomp":
        return await _replay_on_broker(
            settings, element_ids, event=event, force=force, progress=progress or NoProgress()
        )
    async with queue_admin(settings) as admin:
        return await admin.replay(element_ids, event=event, force=force, progress=progress)


async def _replay_on_broker(
    settings: QueueSettings, element_ids: Sequence[int], *, event: str, force: bool, progress: ProgressSink
) -> ReplayResult:
    """``replay`` on ActiveMQ: one confirmed send per element through the transport contract."""
    ids = replay_ids(element_ids)
    progress.start(f"replaying {len(ids)} element(s)", len(ids))
    results: list[ReplayedElement] = []
    async with open_transport(settings, consume=False) as transport:
        for element_id in ids:
            body, attributes = resync_notification(element_id, source="replay", event=event, force=force)
            try:
                results.append(ReplayedElement(element_id, await transport.send(body, attributes)))
            except Exception as error:  # stompman's errors: refused, no receipt in time, connection lost
                results.append(ReplayedElement(element_id, None, error_text(error)))
            progress.advance(1)
    log.info("replayed", queue=settings.url, sent=sum(r.error is None for r in results), total=len(results))
    return ReplayResult(settings.url, results)
