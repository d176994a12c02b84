"""``kordiam-bridge dlq redrive``: move dead letters back to the main queue without losing one, on any backend
(``bridge.queue.QueueAdmin.redrive``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bridge.admin.dlq import element_of
from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import RedriveResult
from bridge.config import QueueSettings
from bridge.queue import RedriveRequest, check_redrive, open_queue_admin


async def dlq_redrive(
    settings: QueueSettings,
    *,
    limit: int | None = None,
    element_ids: Iterable[int] | None = None,
    native: bool | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> RedriveResult:
    request = redrive_request(limit=limit, element_ids=element_ids, native=native)
    check_redrive(settings, request)
    async with open_queue_admin(settings) as queue:
        return await queue.redrive(request, progress=progress or NoProgress(), stop=stop or asyncio.Event())


def redrive_request(*, limit: int | None, element_ids: Iterable[int] | None, native: bool | None) -> RedriveRequest:
    """``--limit``, ``--element`` (none named: every dead letter) and ``--native`` as a queue's redrive request."""
    wanted = frozenset(element_ids or ())
    only_wanted = (lambda message: element_of(message) in wanted) if wanted else None
    return RedriveRequest(element_of, limit=limit, wanted=only_wanted, native=native)
