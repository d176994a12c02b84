"""The worker's slots for work: how many messages do their work at once."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class WorkSlots:
    """At most ``size`` messages do their work at once; the others wait for a slot in arrival order.

    Who takes the slot: by default the consumer runs each handler inside one. A handler that can settle some
    messages without work (the pipeline settles a notification an earlier fetch covered) is given the slots and
    takes one itself, only around the work; the consumer then runs ``read_ahead`` more handlers than there are
    slots, so the messages that need no work are found and settled while the others wait (``ConsumerSettings``).

    Shutdown: a message whose handler never took a slot has done nothing yet, so the consumer hands it back at once
    instead of running it; ``entered`` tells it which.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a worker needs at least one slot")
        self.size = size
        self._semaphore = asyncio.Semaphore(size)
        # Tasks that took a slot (weakly: a finished task leaves by itself).
        self._entered: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._semaphore:
            task = asyncio.current_task()
            if task is not None:
                self._entered.add(task)
            yield

    def entered(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` took a slot (and so may have started its work)."""
        return task in self._entered
