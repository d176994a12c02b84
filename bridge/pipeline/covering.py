"""The covering rule: when a notification needs no fetch of its own."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import NamedTuple

# How far the clock of a worker that starts fetches may run ahead of the clock that stamps ``sent_at`` (SQS's; on
# ActiveMQ the producer's JMS timestamp, or the broker's when the producer sends none): a worker's clock ahead
# makes its fetch look later than it was, and so cover a notification sent after it; a stamping clock ahead only
# costs fetches. NTP keeps both
# within milliseconds; five seconds is generous for a drifting host yet costs nothing in a backlog, whose
# notifications are minutes old when the worker reads them. Notifications this worker already holds need no
# allowance at all (see ``FetchLedger``), so the skew only matters across workers and restarts.
DEFAULT_CLOCK_SKEW_SECONDS = 5.0


class Fetched(NamedTuple):
    """A fetch behind a sync without failures: when it started (wall clock; ``local_start`` on this worker's
    monotonic clock) and what it found: the element's modification date (``synced``) or the element ``gone``."""

    started: float
    local_start: float | None = None
    synced: datetime | None = None
    gone: bool = False


def answers(synced: datetime | None, gone: bool, *, announced: datetime | None, deletion: bool) -> bool:
    """Whether the channels, brought in line with what a fetch found (``synced``, or the element ``gone``), hold
    what a notification announced: a deletion (``deletion``) only if the fetch found the element gone; a version
    (``announced``, the modification date its body carries) only if the fetch found one at least as new. Kordiam
    may answer a read from a copy that has not caught up with the change yet; such a fetch covers nothing the
    notification says it is older than. Compared to the second: a notification's body and the API may not give a
    date at the same precision."""
    if deletion:
        return gone
    if gone or announced is None or synced is None:
        return True
    return at_least_as_new(synced, announced)


def at_least_as_new(modified: datetime, than: datetime) -> bool:
    """Kordiam modification dates compared to the second (``answers``)."""
    return modified.replace(microsecond=0) >= than.replace(microsecond=0)


class FetchLedger:
    """When this worker last *started* a successful fetch of each element, and which notifications that covers.

    Contract: a notification is covered when a fetch of its element started after it was sent, and that fetch
    succeeded and its sync completed: the element Kordiam answered was then already at least as new as the one
    the notification announced. Two ways to know "after it was sent":

    - by this worker's own clock: the fetch started after this worker *received* the notification
      (``received_at``, monotonic). Receiving follows sending, so no clock comparison is involved. This is what
      makes the notifications that wait together (in the prefetch, behind a running sync of their element, or
      behind their FIFO group) share the next fetch instead of queueing one each;
    - by the broker's clock: the fetch started at least ``clock_skew`` seconds after ``sent_at``. This one also
      works for a fetch by another worker, whose start time the state store keeps (``covered_by``); the allowance
      is for the fetching worker's clock running ahead of the clock that stamped ``sent_at``.

    Only ``record`` after a sync without failures makes a start time count; a failed fetch or sync covers
    nothing. A notification with neither time is never covered, and neither is one the fetch's answer does not
    hold (``answers``: Kordiam's answer older than the version it announced, or a deletion answered with the
    element). The ledger keeps the ``capacity`` most recently
    recorded elements; forgetting one only costs a fetch, never staleness.
    """

    def __init__(self, *, clock_skew: float = DEFAULT_CLOCK_SKEW_SECONDS, capacity: int = 100_000) -> None:
        self._clock_skew = clock_skew
        self._capacity = capacity
        # element id → the latest fetch recorded (its ``local_start``: the latest this worker ran, or None when only
        # another worker's is known)
        self._started: OrderedDict[int, Fetched] = OrderedDict()

    def covers(
        self,
        element_id: int,
        sent_at: float | None,
        received_at: float | None = None,
        *,
        announced: datetime | None = None,
        deletion: bool = False,
    ) -> bool:
        """Whether the recorded fetch covers a notification sent at ``sent_at`` (the queue's clock) and received at
        ``received_at`` (this worker's monotonic clock), announcing ``announced`` or a ``deletion`` (``answers``)."""
        fetched = self._started.get(element_id)
        if fetched is None or not answers(fetched.synced, fetched.gone, announced=announced, deletion=deletion):
            return False
        local = fetched.local_start
        if received_at is not None and local is not None and local > received_at:
            return True
        return self.covered_by(fetched.started, sent_at)

    def covered_by(self, fetch_started: float | None, sent_at: float | None) -> bool:
        """The broker-clock rule for one recorded start time (this ledger's or the state store's,
        ``ElementMark.fetched_at``)."""
        if sent_at is None or fetch_started is None:
            return False
        return fetch_started - self._clock_skew > sent_at

    def record(self, element_id: int, fetched: Fetched) -> None:
        """A sync whose fetch (``fetched``: started at ``started`` on the wall clock, ``local_start`` on this
        worker's monotonic clock when this worker ran it, and found ``synced`` or the element ``gone``) succeeded.
        Neither time ever moves backwards; what was found is the latest-started fetch's."""
        held = self._started.get(element_id)
        latest = fetched if held is None or fetched.started >= held.started else held
        local = held.local_start if held is not None else None
        if fetched.local_start is not None and (local is None or fetched.local_start > local):
            local = fetched.local_start
        self._started[element_id] = latest._replace(local_start=local)
        self._started.move_to_end(element_id)
        while len(self._started) > self._capacity:
            self._started.popitem(last=False)
