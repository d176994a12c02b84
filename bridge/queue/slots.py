"""The worker's slots for work: how many messages do their work at once."""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
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

    def hold(self) -> _SlotHold:
        """``async with slots.hold():`` runs its block in a slot, once one is free."""
        return _SlotHold(self)

    async def take(self) -> None:
        """Wait for a slot and take it (``hold`` gives it back); the current task counts as ``entered``."""
        await self._semaphore.acquire()
        task = asyncio.current_task()
        if task is not None:
            self._entered.add(task)

    def give_back(self) -> None:
        self._semaphore.release()

    def entered(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` took a slot (and so may have started its work)."""
        return task in self._entered


class _SlotHold:
    # A class, not an @asynccontextmanager: entered once per message, at a third of the cost.
    __slots__ = ("_slots",)

    def __init__(self, slots: WorkSlots) -> None:
        self._slots = slots

    async def __aenter__(self) -> None:
        await self._slots.take()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._slots.give_back()
