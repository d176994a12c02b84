"""The state store interface."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from bridge.errors import TransientError
from bridge.valueclass import value_class


class ElementBusy(TransientError):
    """Another worker holds this element's lease; the message is retried shortly."""


class StateUnavailable(TransientError):
    """The store could not answer now: DynamoDB throttled, failed server-side or could not be reached; a SQLite
    file stayed locked by another process, or its disk is full or read-only. The message is retried."""


@value_class
class Delivery:
    """One publication as delivered to one channel."""

    element_id: int
    channel: str
    publication_id: int
    external_id: str
    fingerprint: str
    edit_link: str | None = None
    open_link: str | None = None
    live: bool = False
    edit_link_title: str | None = None
    open_link_title: str | None = None
    modification_date: datetime | None = None
    version: int | None = None


@value_class
class ElementMark:
    """The newest version of an element the bridge has fully synced (or seen deleted).

    ``fetched_at`` is when (wall clock, seconds since the epoch) the Kordiam fetch behind this mark started; a
    notification sent before it is covered (``bridge.pipeline.covering``). Stores never move it backwards: a
    mark with an older ``fetched_at`` than the one recorded is ignored (the later fetch's mark is the newer
    truth), and a mark without one keeps the recorded time.

    ``resync``, as read: a token the element carries while its channels may hold an older version than its
    deliveries say. A sync that lost its lease before its release may have written its older version after a newer
    sync's (a long stall, the store unreachable); its release marks the element so (``StateStore.lease``), with a
    new token. A sync that reads a token is never skipped (neither covered nor older) and rewrites every channel,
    as a forced replay does, to the items its deliveries name. As given to ``mark_on_release`` or
    ``mark_element``: the token that sync read and made good (None if it parked a channel, which it did not
    rewrite); the store clears the element's token if it is still that one (and the mark applies), and keeps a
    newer one. A mark never sets a token. A mark read back may carry a token and nothing else (an element marked
    before any sync of it recorded a mark).
    """

    element_id: int
    modification_date: datetime | None
    version: int | None
    deleted: bool
    fetched_at: float | None = None
    resync: str | None = None


@dataclass(slots=True)
class HeldLease:
    """An element's lease while its block runs (what ``StateStore.lease`` yields).

    ``mark_on_release`` gives the store the element's mark to record as it gives the lease back, instead of a
    ``mark_element`` call of its own: a store that can records both in one transaction (SQLite: one commit fewer
    per message); the others record the mark just before the release. Once given, the mark is recorded however
    the block ends (a finished sync gives it last), with ``mark_element``'s rules, before the lease is free.

    ``mark_at_take`` is the element's mark (None: it has none) as the lease was taken, when ``mark_at_take_known``:
    a store that reads it in the statement that takes the lease (SQLite) spares its holder an ``element_mark``
    read. The mark cannot change while the lease is held: marks are recorded under the element's lease.

    ``lost`` is set by the release: the lease was no longer this holder's (it stalled past ``lease_seconds`` and
    another worker took the element, which may have written a newer version to the channels before this holder's
    older one landed). The release then marked the element for a re-sync (``ElementMark.resync``), so that whoever
    syncs it next rewrites its channels with the newest version. A release whose write failed (it raises the store's
    error) sets it too: it could not tell whether the lease was still its own.
    """

    element_id: int
    mark: ElementMark | None = None
    mark_at_take: ElementMark | None = None
    mark_at_take_known: bool = False
    lost: bool = False

    def mark_on_release(self, mark: ElementMark) -> None:
        if mark.element_id != self.element_id:
            raise ValueError(f"a mark of element {mark.element_id} given to the lease of {self.element_id}")
        self.mark = mark


def new_generation() -> int:
    """A parked item's generation: random, 62 bits (an integer every store keeps exactly), so one is never met
    again for the same element and channel in practice (the odds of a repeat are 2**-62 per park)."""
    return secrets.randbits(62) + 1


@dataclass(frozen=True, slots=True)
class Parked:
    """A channel's work on an element, set aside while the channel refuses the bridge's own credentials or is down.

    The message that met the refusal or the open circuit is not failed for it (a wrong secret or a CMS down is the
    same for every message, not the message's fault): the element is parked for that channel instead, and synced
    again once a call to the channel succeeds (``bridge.pipeline.parking``). ``since`` is when it was first parked
    (UTC), ``reason`` the latest refusal's or open circuit's text, ``generation`` a number every park draws anew
    (``new_generation``): an unpark that names the generation it read leaves an element parked again since then in
    place. Drawn, not counted: a count would start again at 1 once the item was unparked, and an unpark by a
    requeue that read the old item would then remove a new one (two requeues of one element, one parked again).
    """

    element_id: int
    channel: str
    reason: str
    since: datetime
    generation: int = 1


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """An element's lease as the store holds it: ``owner`` (``LeaseOwner.encode``'s text) until ``expires_at``
    (seconds since the epoch). One past its expiry is free to take (no worker holds it any longer); a store may
    keep it until the next take or release (SQLite), or until its TTL clears it (DynamoDB)."""

    owner: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RecordedDelivery:
    """A delivery and when the store recorded it (UTC; None if the store kept no time)."""

    delivery: Delivery
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class ElementRecord:
    """All a store keeps on one element, bar its parked items (``StateStore.parked``): its mark, its deliveries
    (by channel and publication) and its lease, as ``StateStore.element_record`` reads them for an operator."""

    element_id: int
    mark: ElementMark | None
    deliveries: list[RecordedDelivery]
    lease: LeaseRecord | None

    @property
    def seen(self) -> bool:
        """Whether the store knows the element at all (a lease alone is no sync: a first one may be under way)."""
        return self.mark is not None or bool(self.deliveries)


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """What one channel was delivered, as ``StateStore.delivery_counts`` counted it: deliveries (one per
    publication), how many of them are live, how many elements they belong to, and the newest Kordiam
    modification date among them (the store keeps no write time)."""

    deliveries: int = 0
    live: int = 0
    elements: int = 0
    latest: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """``StateStore.delivery_counts``'s answer. ``complete``: every delivery was counted, the figures are exact.
    Otherwise the store stopped after reading ``read`` items (not all of them deliveries) and every figure is a
    lower bound (``latest``: the newest among those read). ``table_items``: the store's own estimate of how many
    items it holds in all (deliveries, marks, leases and parked elements), when it has one; DynamoDB's
    ``ItemCount``, which it updates about every six hours."""

    channels: dict[str, ChannelCounts]
    complete: bool
    read: int
    table_items: int | None = None

    @property
    def deliveries(self) -> int:
        return sum(counts.deliveries for counts in self.channels.values())


@dataclass(slots=True)
class _Tally:
    deliveries: int = 0
    live: int = 0
    elements: set[int] = field(default_factory=set)
    latest: datetime | None = None


def count_deliveries(deliveries: Iterable[tuple[str, int, bool, datetime | None]]) -> dict[str, ChannelCounts]:
    """Per channel counts of ``(channel, element_id, live, modification_date)`` (naive dates count as UTC)."""
    tallies: dict[str, _Tally] = {}
    for channel, element_id, live, modified in deliveries:
        tally = tallies.setdefault(channel, _Tally())
        tally.deliveries += 1
        tally.live += int(live)
        tally.elements.add(element_id)
        if modified is not None:
            moment = modified.replace(tzinfo=UTC) if modified.tzinfo is None else modified
            tally.latest = moment if tally.latest is None else max(tally.latest, moment)
    return {channel: ChannelCounts(t.deliveries, t.live, len(t.elements), t.latest) for channel, t in tallies.items()}


def is_older(a: tuple[datetime | None, int | None], b: tuple[datetime | None, int | None]) -> bool:
    """True if Kordiam version ``a`` (modificationDate, version) is strictly older than ``b``."""
    a_date, a_version = a
    b_date, b_version = b
    if a_date is not None and b_date is not None and a_date != b_date:
        return a_date < b_date
    if a_version is not None and b_version is not None:
        return a_version < b_version
    return False


class StateStore(Protocol):
    """What the bridge delivered where. Implementations must be safe for several worker processes."""

    # True when a read answers on the event loop without waiting on the network (SQLite): the sync engine then
    # reads before the Kordiam fetch instead of beside it, as overlapping them would cost a task per message.
    reads_in_process: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def probe(self) -> None:
        """Make the writes and reads a message makes, on a key no element has; raise the store's error (a
        ``StateUnavailable``, say) if it cannot serve the worker now. The worker asks when a message's sync failed
        at the store, to tell its own fault (the store down for everyone: pause) from the message's."""
        ...

    async def flush(self) -> None:
        """Have every write this store committed so far made to survive a crash of the host (a power loss, the
        kernel remounting the disk read-only after an I/O error) soon, or at once (each store says how soon); raise
        the store's error while it cannot. The worker asks before a message is acknowledged: a delivery forgotten
        is published again at the element's next change."""
        ...

    def lease(self, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        """Hold the element exclusively across processes; raise ``ElementBusy`` if another worker keeps it.
        Re-entrant for its owner: a block of the element inside another gets the same ``HeldLease``, and only the
        outermost block's end gives it back. The ``HeldLease`` it yields records a mark given to it as the lease is
        released (``mark_on_release``). A release that finds the lease no longer its own marks the element for a
        re-sync (a new ``ElementMark.resync`` token) and sets ``HeldLease.lost``; one whose write failed raises the
        store's error and sets ``HeldLease.lost`` as well (the loss cannot be ruled out). A mark that failed is
        raised after the lease was given back, and ``lost`` says what that release found."""
        ...

    async def deliveries(self, element_id: int) -> list[Delivery]: ...

    async def deliveries_with_external_id(self, external_id: str) -> list[Delivery]:
        """The deliveries whose channel item has ``external_id``, by element, channel and publication: an index
        lookup (the ingress maps the id in a Kordiam ``DELETE`` back to its element with it), never a scan."""
        ...

    async def deliveries_of_publication(self, publication_id: int) -> list[Delivery]:
        """The deliveries of Kordiam publication ``publication_id``, by element and channel: an index lookup (the
        ingress maps the placeholder id it answered a Platform integration call with back to its element)."""
        ...

    async def record(self, delivery: Delivery) -> bool:
        """Store the delivery unless a newer Kordiam version is already recorded; False if it was older."""
        ...

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None: ...

    async def element_mark(self, element_id: int) -> ElementMark | None: ...

    async def mark_element(self, mark: ElementMark) -> None: ...

    async def element_record(self, element_id: int) -> ElementRecord:
        """The element's mark, deliveries (with when each was recorded) and lease, read for an operator
        (``kordiam-bridge element``): key lookups on the element, never a scan, and served by a store opened
        ``read_only``. Changes nothing; an element the store never saw has no mark, no deliveries, no lease."""
        ...

    async def all_deliveries(self) -> list[Delivery]:
        """Every delivery: a read of the whole store (tests and benchmarks; ``status`` asks ``delivery_counts``)."""
        ...

    async def delivery_counts(self, limit: int) -> DeliveryCounts:
        """Per channel, what was delivered (``ChannelCounts``), for ``status``, which an operator or a monitor may
        run every minute: it must stay fast and cheap on a table of hundreds of thousands of deliveries. A store
        whose reads cost read capacity shared with the workers (DynamoDB) reads at most ``limit`` items and says
        when it stopped (``complete`` False, the figures lower bounds); one that counts on its own disk (SQLite)
        counts them all. Served by a store opened ``read_only``; changes nothing."""
        ...

    async def park(self, element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        """Record that ``channel`` owes ``element_id`` a sync. Parking an element the channel already has parked
        keeps its ``since``, takes the new ``reason`` and a new ``generation``. A new item's ``since`` is ``since``
        when given (a requeued element parked again: when it was first parked, which its notification carried),
        else now. A parked item never expires."""
        ...

    async def unpark(self, element_id: int, channel: str, *, generation: int | None = None) -> None:
        """Forget the parked item; one that is not parked is no error. With ``generation`` (of the ``Parked`` a
        requeue read), only if it was not parked again since: a worker that met a refusal of the notification just
        requeued, and parked the element again before this unpark, must not lose it."""
        ...

    async def parked(self, channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        """At most ``limit`` of the channel's parked items, by element id ascending, those above ``after`` (a
        page's last element id): a key lookup, never a scan of the deliveries."""
        ...

    async def parked_count(self, channel: str) -> int:
        """How many elements ``channel`` has parked."""
        ...

    async def parked_channels(self) -> list[str]:
        """The channels that have parked elements, by name: every one that has some, and perhaps a few that had
        some once (the caller counts). For elements parked under a channel name the configuration no longer has
        (renamed or removed), which the configured names alone would never find."""
        ...

    # A sweep is a background job of the fleet (the reconciliation sweep: ``RECONCILE_SWEEP``), run by one worker
    # at a time under its lease, resuming where its last finished run left off (its cursor). Both are records of
    # the sweep's own, apart from every element's.

    async def sweep_cursor(self, sweep: str) -> datetime | None:
        """Where the sweep resumes: the latest place ``advance_sweep_cursor`` recorded (UTC), None if none was.
        Shared by every worker and kept across restarts; served by a store opened ``read_only`` (``status``)."""
        ...

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        """Record ``to`` as the sweep's cursor unless it already stands there or later: one conditional write, so
        the cursor never moves back, whichever of two workers writes last."""
        ...

    async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
        """Hold the sweep's lease until ``seconds`` from now, without waiting: True if taken (it was free, expired,
        held by a process on this host that is gone, or this store's own: then it is extended), False if another
        owner holds it. A holder that dies holds it no longer than ``seconds``."""
        ...

    async def release_sweep_lease(self, sweep: str) -> None:
        """Give the sweep's lease back if it is still this store's (one another owner holds since is left)."""
        ...


# The reconciliation sweep's name in the store (``bridge.pipeline.reconcile``).
RECONCILE_SWEEP = "reconcile"


async def parked_elsewhere(store: StateStore, configured: Collection[str]) -> dict[str, int]:
    """Each channel outside ``configured`` that has parked elements, by name, with how many: renamed or removed
    from the configuration while it held some, so no worker calls it, and only a requeue by hand serves them."""
    counts: dict[str, int] = {}
    for name in await store.parked_channels():
        if name not in configured and (count := await store.parked_count(name)):
            counts[name] = count
    return counts


async def iter_parked(store: StateStore, channel: str, *, page: int = 100) -> AsyncIterator[Parked]:
    """Every element ``channel`` has parked, by element id ascending, read ``page`` at a time (``StateStore.parked``
    after the last id read, so elements unparked meanwhile do not shift the pages)."""
    after: int | None = None
    while True:
        found = await store.parked(channel, after=after, limit=page)
        for parked in found:
            yield parked
        if len(found) < page:
            return
        after = found[-1].element_id
