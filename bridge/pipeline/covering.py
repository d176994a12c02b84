"""The covering rule: when a notification needs no fetch of its own."""

from __future__ import annotations

from collections import OrderedDict

# How far the queue's clock (which stamps ``sent_at``) may run ahead of this worker's clock. NTP keeps both
# within milliseconds; five seconds is generous for a drifting host yet costs nothing in a backlog, whose
# notifications are minutes old when the worker reads them.
DEFAULT_CLOCK_SKEW_SECONDS = 5.0


class FetchLedger:
    """When this worker last *started* a successful fetch of each element, and which notifications that covers.

    Contract: a notification sent at ``sent_at`` (the broker's clock) is covered when a fetch of its element
    started at least ``clock_skew`` seconds after it, and that fetch succeeded and its sync completed: the
    element Kordiam answered was then already at least as new as the one the notification announced. Only
    ``record`` after a sync without failures makes a start time count; a failed fetch or sync covers nothing.
    A notification without ``sent_at`` is never covered. The ledger keeps the ``capacity`` most recently
    recorded elements; forgetting one only costs a fetch, never staleness.
    """

    def __init__(self, *, clock_skew: float = DEFAULT_CLOCK_SKEW_SECONDS, capacity: int = 100_000) -> None:
        self._clock_skew = clock_skew
        self._capacity = capacity
        self._started: OrderedDict[int, float] = OrderedDict()

    def covers(self, element_id: int, sent_at: float | None) -> bool:
        return self.covered_by(self._started.get(element_id), sent_at)

    def covered_by(self, fetch_started: float | None, sent_at: float | None) -> bool:
        """The rule for one recorded start time (this ledger's or the state store's, ``ElementMark.fetched_at``)."""
        if sent_at is None or fetch_started is None:
            return False
        return fetch_started - self._clock_skew > sent_at

    def record(self, element_id: int, fetch_started: float) -> None:
        """A sync whose fetch started at ``fetch_started`` (wall clock) succeeded."""
        if fetch_started <= self._started.get(element_id, float("-inf")):
            return
        self._started[element_id] = fetch_started
        self._started.move_to_end(element_id)
        while len(self._started) > self._capacity:
            self._started.popitem(last=False)
