"""``QueueAdmin(transport)``: ``dlq redrive`` over an ``SqsTransport`` the caller already holds (the operator
tests put a failing client into one). The commands themselves open their queue with
``bridge.queue.open_queue_admin``; the SQS operations are ``bridge.queue.sqs_admin``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.redrive import redrive_request
from bridge.admin.results import RedriveResult
from bridge.queue.sqs import SqsTransport
from bridge.queue.sqs_admin import MOVE_TASK_POLL_SECONDS, REDRIVE_HOLD_SECONDS, SqsQueueAdmin


class QueueAdmin:
    """``dlq redrive`` on an open SQS transport, with the SQS tuning knobs (``hold``, ``poll_interval``)."""

    def __init__(self, transport: SqsTransport) -> None:
        self.queue = SqsQueueAdmin(transport)

    async def redrive(
        self,
        *,
        limit: int | None = None,
        element_ids: Iterable[int] | None = None,
        native: bool | None = None,
        progress: ProgressSink | None = None,
        hold: int = REDRIVE_HOLD_SECONDS,
        poll_interval: float = MOVE_TASK_POLL_SECONDS,
        stop: asyncio.Event | None = None,
    ) -> RedriveResult:
        request = redrive_request(limit=limit, element_ids=element_ids, native=native)
        return await self.queue.redrive(
            request,
            progress=progress or NoProgress(),
            stop=stop or asyncio.Event(),
            hold=hold,
            poll_interval=poll_interval,
        )
