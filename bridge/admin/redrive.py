"""``kordiam-bridge dlq redrive``: move dead letters back to the main queue without losing one, on any backend
(``bridge.queue.QueueAdmin.redrive``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from bridge.admin.dlq import element_of
from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import RedriveResult
from bridge.config import QueueSettings
from bridge.queue import check_redrive, open_queue_admin
from bridge.queue.transport import QueueMessage


async def dlq_redrive(
    settings: QueueSettings,
    *,
    limit: int | None = None,
    element_ids: Iterable[int] | None = None,
    native: bool | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> RedriveResult:
    wanted = only_elements(element_ids)
    check_redrive(settings, limit=limit, filtered=wanted is not None, native=native)
    async with open_queue_admin(settings) as queue:
        return await queue.redrive(
            limit=limit,
            wanted=wanted,
            element_of=element_of,
            native=native,
            progress=progress or NoProgress(),
            stop=stop or asyncio.Event(),
        )


def only_elements(element_ids: Iterable[int] | None) -> Callable[[QueueMessage], bool] | None:
    """The redrive filter for ``--element``: None (every dead letter) when no element is named."""
    wanted = frozenset(element_ids or ())
    if not wanted:
        return None
    return lambda message: element_of(message) in wanted
