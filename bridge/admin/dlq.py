"""``kordiam-bridge dlq list`` and ``dlq show``: read the dead-letter queue without consuming it (SQS or ActiveMQ)."""

from __future__ import annotations

from bridge.admin.progress import ProgressSink
from bridge.admin.results import DlqListing, DlqMessage
from bridge.admin.sqs import queue_admin
from bridge.admin.stomp import dlq_list_on_broker, dlq_show_on_broker
from bridge.config import QueueSettings


async def dlq_list(settings: QueueSettings, *, limit: int = 50, progress: ProgressSink | None = None) -> DlqListing:
    if settings.backend == "stomp":
        return await dlq_list_on_broker(settings, limit=limit)
    async with queue_admin(settings) as admin:
        return await admin.dlq_list(limit=limit, progress=progress)


async def dlq_show(
    settings: QueueSettings, message_id: str, *, scan_limit: int = 1000, progress: ProgressSink | None = None
) -> DlqMessage | None:
    if settings.backend == "stomp":
        return await dlq_show_on_broker(settings, message_id, scan_limit=scan_limit)
    async with queue_admin(settings) as admin:
        return await admin.dlq_show(message_id, scan_limit=scan_limit, progress=progress)
