"""Keeping this process's element leases alive while their syncs run.

A lease expires ``lease_seconds`` after it was taken, so that a crashed worker's elements come free again. A
live worker's sync can take longer than that: Kordiam's retry budget, a slow channel, several channels one after
another. Without renewal another worker would take the element over mid-sync and both could create it in a
channel. One keeper per state store (one task per process, not one per message) extends every lease held for
a third of ``lease_seconds`` or more, every third of ``lease_seconds``: a lease is extended at the latest two
thirds into its life. A worker whose event loop hangs, or that died, extends nothing, so its leases still
expire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic

import structlog

log = structlog.get_logger("bridge.state")

# Extends the given leases if this process still owns them; returns the ones it no longer owns.
Extend = Callable[[list[int]], Awaitable[set[int]]]


@dataclass(slots=True)
class _Held:
    depth: int  # a lease is re-entrant for its owner
    since: float  # monotonic time it was taken or last extended


class LeaseKeeper:
    def __init__(self, lease_seconds: float, extend: Extend, *, enabled: bool = True) -> None:
        self.interval = lease_seconds / 3
        self._extend = extend
        self._enabled = enabled
        self._held: dict[int, _Held] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def taken(self, element_id: int) -> None:
        held = self._held.get(element_id)
        if held is None:
            self._held[element_id] = _Held(1, monotonic())
        else:
            held.depth += 1

    def released(self, element_id: int) -> None:
        held = self._held.get(element_id)
        if held is not None:
            held.depth -= 1
            if held.depth <= 0:
                del self._held[element_id]

    async def extend_due(self) -> None:
        """Extend the leases held for ``interval`` or longer (what each tick of the keeper does)."""
        now = monotonic()
        due = {element_id: held for element_id, held in self._held.items() if now - held.since >= self.interval}
        if not due:
            return
        try:
            lost = await self._extend(list(due))
        except Exception as error:  # the store is unreachable: try again next tick, the leases have a third left
            log.warning("lease_extension_failed", count=len(due), error=f"{type(error).__name__}: {error}")
            return
        for element_id, held in due.items():
            if self._held.get(element_id) is not held:
                continue  # released (and perhaps taken anew) while the extension ran
            if element_id in lost:
                del self._held[element_id]
                log.error(
                    "lease_lost",
                    element_id=element_id,
                    hint="this worker's event loop stalled past state.lease_seconds and another worker took the "
                    "element over; the conditional delivery records keep the newer sync's state",
                )
            else:
                held.since = now

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.extend_due()
