"""``kordiam-bridge dlq redrive``: move dead letters back to the main queue without losing one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bridge.admin.progress import ProgressSink
from bridge.admin.results import RedriveResult
from bridge.admin.sqs import queue_admin
from bridge.admin.stomp import dlq_redrive_on_broker
from bridge.config import QueueSettings


async def dlq_redrive(
    settings: QueueSettings,
    *,
    limit: int | None = None,
    element_ids: Iterable[int] | None = None,
    native: bool | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> RedriveResult:
    if settings.backend == "stomp":
        return await dlq_redrive_on_broker(settings, limit=limit, element_ids=element_ids, native=native, stop=stop)
    async with queue_admin(settings) as admin:
        return await admin.redrive(limit=limit, element_ids=element_ids, native=native, progress=progress, stop=stop)
