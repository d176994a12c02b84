"""The reconciliation sweep: heal changes whose notification never arrived.

Every ``interval_seconds`` the sweep lists the elements Kordiam changed since the previous sweep (minus an
overlap, because modification dates have one-second resolution and a change may show in the list late). The
previous sweep is dated by its start on the worker's clock, or on Kordiam's (its list's ``Date``) when that is
earlier, so a worker clock running ahead of Kordiam's skips no change. It enqueues a notification for each element
newer than what the state store holds (or due a re-sync: ``ElementMark.resync``). It goes through the normal
queue, so retries, the dead-letter queue and idempotency apply unchanged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import Element
from bridge.ops import metrics
from bridge.pipeline.notification import resync_notification
from bridge.queue.transport import Transport
from bridge.state.base import StateStore, is_older

log = structlog.get_logger("bridge.reconcile")


class Reconciler:
    def __init__(
        self,
        *,
        kordiam: KordiamClient,
        state: StateStore,
        transport: Transport,
        interval: float,
        lookback: float,
        overlap: float = 120.0,
    ) -> None:
        self._kordiam = kordiam
        self._state = state
        self._transport = transport
        self._interval = interval
        self._overlap = overlap
        self._since = datetime.now(UTC) - timedelta(seconds=lookback)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep at once (catching up on ``lookback``), then every ``interval`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as error:
                metrics.RECONCILE_FAILURES.inc()
                log.error("reconcile_failed", error=f"{type(error).__name__}: {error}", retry_in=self._interval)
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                continue

    async def sweep(self) -> int:
        started = datetime.now(UTC)
        kordiam_started: list[datetime] = []
        since = self._since - timedelta(seconds=self._overlap)
        seen = enqueued = 0
        async for element in self._kordiam.iter_modified_elements(since, on_kordiam_clock=kordiam_started.append):
            seen += 1
            if isinstance(element, Element):
                mark = await self._state.element_mark(element.id)
                # An element due a re-sync (a worker lost its lease mid-sync) counts as not synced, whatever its mark.
                synced = (mark.modification_date, mark.version) if mark and not (mark.deleted or mark.resync) else None
                if synced is not None and not is_older(synced, (element.modification_date, element.version)):
                    continue
            # else unreadable here: enqueued all the same, so that its fetch dead-letters it with the reason (or
            # syncs it, if the element itself reads where its list entry did not)
            body, attributes = resync_notification(element.id, source="reconcile")
            await self._transport.send(body, attributes, group_id=str(element.id))
            enqueued += 1
            metrics.RECONCILED.inc()
        # The next sweep starts from Kordiam's clock when it runs behind the worker's: from the worker's own, a
        # clock ahead by more than the overlap would ask for changes from a moment Kordiam has not reached, and
        # never list the ones between. Never moved back (a proxy's or cache's stale Date).
        self._since = max(self._since, min([started, *kordiam_started]))
        log.info("reconcile_swept", since=since.isoformat(), seen=seen, enqueued=enqueued)
        return enqueued
