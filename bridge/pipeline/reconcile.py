"""The reconciliation sweep: heal changes whose notification never arrived.

Each sweep lists the elements Kordiam changed since the previous sweep (minus an overlap, because modification
dates have one-second resolution and a change may show in the list late) and enqueues a notification for each
element newer than what the state store holds (or due a re-sync: ``ElementMark.resync``). It goes through the
normal queue, so retries, the dead-letter queue and idempotency apply unchanged.

The previous sweep's place (its cursor) is kept in the state store, so that a restart resumes there however long
the worker was stopped: the changes made meanwhile are the lost notifications the sweep exists for. A long span
is listed a day at a time, the cursor kept after each day, so that a sweep failing part-way lists at most a day
again. A sweep is dated by its start on the worker's clock, or on Kordiam's (its list's ``Date``) when that is
earlier, so a worker clock running ahead of Kordiam's skips no change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import monotonic

import structlog

from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import Element
from bridge.ops import metrics
from bridge.pipeline.notification import resync_notification
from bridge.queue.transport import Transport
from bridge.state.base import RECONCILE_SWEEP, StateStore, is_older

log = structlog.get_logger("bridge.reconcile")

# A sweep logs its progress every this many listed elements: one resuming from a cursor weeks old lists them all.
PROGRESS_EVERY = 1000

# A span longer than this is listed a window at a time, oldest first, and the cursor stored after each: a sweep
# that fails part-way (Kordiam down, a restart, a deploy) leaves the next to resume at the last window it listed
# whole, not at the span's start. A day: sweeps an interval apart (15 minutes by default, a day at most) stay one
# list as before; a failure lists at most a day's changes again (tens of pages in a busy newsroom); and a cursor a
# month old costs 30 list calls more than one span would. Nothing an operator needs to tune.
WINDOW = timedelta(days=1)


@dataclass
class _Tally:
    """What a sweep has listed and enqueued so far, for its log lines."""

    since: datetime
    begun: float = field(default_factory=monotonic)
    seen: int = 0
    enqueued: int = 0

    def fields(self) -> dict[str, object]:
        return {
            "since": self.since.isoformat(),
            "seen": self.seen,
            "enqueued": self.enqueued,
            "seconds": round(monotonic() - self.begun),
        }


class Reconciler:
    """Sweeps every ``interval`` seconds, one worker of the fleet at a time.

    A round sweeps only under the sweep's lease in the state store (``RECONCILE_SWEEP``, ``lease_seconds`` long,
    extended while the sweep runs), and only when the stored cursor is ``interval`` old or older: a worker that
    cannot take the lease, or finds the fleet swept recently, skips the round, so every worker may run one. A
    sweep starts from the stored cursor (less the overlap), or, while the store holds none, from ``lookback``
    before this reconciler was made. A span longer than ``WINDOW`` is listed a window at a time, oldest first, and
    the cursor advances (never back) only past what was listed whole: after each window, and at the end to the
    sweep's start. One that failed part-way leaves it at its last whole window, and the next lists from there
    again. A cursor however old is swept whole (the changes before it may all be lost notifications), its progress
    logged as it goes.
    """

    def __init__(
        self,
        *,
        kordiam: KordiamClient,
        state: StateStore,
        transport: Transport,
        interval: float,
        lookback: float,
        lease_seconds: float,
        overlap: float = 120.0,
    ) -> None:
        self._kordiam = kordiam
        self._state = state
        self._transport = transport
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._overlap = overlap
        self._first_since = datetime.now(UTC) - timedelta(seconds=lookback)

    async def run(self, stop: asyncio.Event) -> None:
        """A round at once, then one each time the previous one says, until ``stop``."""
        while not stop.is_set():
            wait = self._interval
            try:
                wait = await self.sweep_if_due()
            except Exception as error:
                metrics.RECONCILE_FAILURES.inc()
                log.error("reconcile_failed", error=f"{type(error).__name__}: {error}", retry_in=self._interval)
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                continue

    async def sweep_if_due(self) -> float:
        """Sweep if this worker takes the sweep's lease and a sweep is due; the seconds until the next round."""
        if not await self._state.take_sweep_lease(RECONCILE_SWEEP, seconds=self._lease_seconds):
            log.info("reconcile_skipped", reason="another worker is sweeping")
            return self._interval
        try:
            # Under the lease: a worker that swept just now has stored its cursor, so a second does not sweep after it.
            cursor = await self._state.sweep_cursor(RECONCILE_SWEEP)
            if cursor is not None:
                metrics.RECONCILE_CURSOR.set(cursor.timestamp())
            if cursor is not None and (due_in := (cursor - datetime.now(UTC)).total_seconds() + self._interval) > 0:
                log.debug("reconcile_skipped", reason="swept recently", cursor=cursor.isoformat(), due_in=round(due_in))
                return min(due_in, self._interval)
            async with self._lease_kept():
                await self.sweep()
        finally:
            await self._state.release_sweep_lease(RECONCILE_SWEEP)
        return self._interval

    async def sweep(self) -> int:
        """List the span since the stored cursor and enqueue what is out of date; the number enqueued."""
        started = datetime.now(UTC)
        kordiam_clock: list[datetime] = []  # the Date of each list's first page
        start = await self._state.sweep_cursor(RECONCILE_SWEEP) or self._first_since
        # Whole seconds, as Kordiam's dates are, so that window edges fall on seconds as Kordiam compares them.
        since = (start - timedelta(seconds=self._overlap)).replace(microsecond=0)
        tally = _Tally(since)
        cursor = start
        # Windows share their edge second, both bounds inclusive: a change at that second is listed by both (the
        # second copy is covered), and one Kordiam's modificationDateTo leaves out (a stamp a fraction past the
        # second) is in the next window's modificationDateFrom. The last window is open-ended: up to Kordiam's now.
        window_from = since
        while window_from + WINDOW < min([started, *kordiam_clock]):
            window_to = window_from + WINDOW
            await self._sweep_window(window_from, window_to, tally, cursor, kordiam_clock)
            # Not past Kordiam's clock as the list began: a change it makes after, dated at or before window_to,
            # would be in no window. Never back (a proxy's or cache's stale Date): the loop ends instead.
            window_from = max(window_from, min([window_to, *kordiam_clock]))
            cursor = max(cursor, window_from)
            await self._state.advance_sweep_cursor(RECONCILE_SWEEP, cursor)
            metrics.RECONCILE_CURSOR.set(cursor.timestamp())
        await self._sweep_window(window_from, None, tally, cursor, kordiam_clock)
        # The next sweep starts from Kordiam's clock when it runs behind the worker's: from the worker's own, a
        # clock ahead by more than the overlap would ask for changes from a moment Kordiam has not reached, and
        # never list the ones between. Never before this sweep's own start (a proxy's or cache's stale Date).
        cursor = max(cursor, min([started, *kordiam_clock]))
        await self._state.advance_sweep_cursor(RECONCILE_SWEEP, cursor)
        metrics.RECONCILE_CURSOR.set(cursor.timestamp())
        log.info("reconcile_swept", cursor=cursor.isoformat(), **tally.fields())
        return tally.enqueued

    async def _sweep_window(
        self,
        since: datetime,
        until: datetime | None,
        tally: _Tally,
        cursor: datetime,
        kordiam_clock: list[datetime],
    ) -> None:
        """Enqueue what is out of date of the elements modified from ``since`` to ``until`` (both inclusive; open
        when None), counting them in ``tally``; ``cursor`` is where a failure here leaves the next sweep."""
        listed = self._kordiam.iter_modified_elements(since, until=until, on_kordiam_clock=kordiam_clock.append)
        async for element in listed:
            tally.seen += 1
            if tally.seen % PROGRESS_EVERY == 0:
                log.info("reconcile_progress", cursor=cursor.isoformat(), **tally.fields())
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
            tally.enqueued += 1
            metrics.RECONCILED.inc()

    @asynccontextmanager
    async def _lease_kept(self) -> AsyncIterator[None]:
        """While inside, take the sweep's lease again every third of its life: a long sweep keeps it, and a worker
        that died (or whose loop hangs) extends nothing, so its lease expires."""
        keeper = asyncio.create_task(self._keep_lease(), name="reconcile-lease")
        try:
            yield
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                held = await self._state.take_sweep_lease(RECONCILE_SWEEP, seconds=self._lease_seconds)
            except Exception as error:  # the store is unreachable: tried again while a third of the lease is left
                log.warning("reconcile_lease_extension_failed", error=f"{type(error).__name__}: {error}")
                continue
            if not held:
                # Another worker took it after it expired (this one stalled): both sweep until this one ends, and
                # the copies they enqueue twice are covered by the first fetch.
                log.warning("reconcile_lease_lost", hint="this worker stalled past state.lease_seconds mid-sweep")
                return
