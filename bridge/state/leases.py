"""Element leases shared by both state stores: who owns one, when its owner is gone, taking one, keeping it.

A lease expires ``lease_seconds`` after it was taken, so that a crashed worker's elements come free again. A
live worker's sync can take longer than that: Kordiam's retry budget, a slow channel, several channels one after
another. Without renewal another worker would take the element over mid-sync and both could create it in a
channel. One keeper per state store (one task per process, not one per message) extends every lease held for
a third of ``lease_seconds`` or more, looking every sixth of ``lease_seconds``: a lease is extended at the latest
half-way into its life, so an extension that fails (a store call may take many seconds to fail: DynamoDB's
timeouts and retries, a SQLite file locked up to the busy timeout) is tried again while half its life is left. A
worker whose event loop hangs, or that died, extends nothing, so its leases still expire. One that hung and then
resumes learns it at its release (``HeldLease.lost``): the store then marks the element for a re-sync.

A worker need not wait for that expiry when the holder is a process on its own host that no longer runs (the
worker it replaces after a kill -9 or a crash): each lease records its owner's process (``LeaseOwner``), and
``acquire`` takes over a lease whose process is gone at once. Holders on other hosts are judged by expiry alone.

A sweep's lease (``StateStore.take_sweep_lease``: one worker of the fleet runs the sweep) has the same owners and
the same rule for a gone one (``try_sweep_lease``); its holder extends it by taking it again as the sweep goes on.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from time import monotonic
from types import TracebackType

import structlog

from bridge.digits import ascii_digits
from bridge.state.base import ElementBusy, HeldLease

log = structlog.get_logger("bridge.state")

# How often a worker waiting for a live holder's lease looks again, at most (a conditional write and a read).
MAX_POLL_SECONDS = 2.0

# Tries to take the element's lease; ``replacing`` is the exact owner of a lease whose process is gone, which
# may be taken over even before it expires. Returns the ``HeldLease`` once the lease is taken (with the mark if the
# store read it in the same step), else its holder's owner text ("" if the lease was released meanwhile).
TakeLease = Callable[[int, str | None], Awaitable[HeldLease | str]]
# Gives the element's lease back if this store still owns it, recording the lease's mark first when one was given
# (``HeldLease.mark_on_release``); sets ``HeldLease.lost`` if it no longer owned it (the element is then marked for a
# re-sync), and if its write failed (it raises then): a release that could not ask cannot rule the loss out.
ReleaseLease = Callable[[HeldLease], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LeaseOwner:
    """Who holds a lease: one store instance (``token``) in one process, identified so it cannot be mistaken.

    ``host`` is the kernel's boot id plus the pid namespace: two processes with one ``host`` see the same process
    table, so the holder's ``pid`` can be looked up. ``started`` (the process start time, in clock ticks since
    boot) tells a reused pid from the holder itself. Without /proc (not Linux) ``host`` is None and only expiry
    frees the lease.
    """

    token: str
    host: str | None
    pid: int
    started: int | None

    @classmethod
    def of_process(cls, pid: int) -> LeaseOwner:
        """A new owner in process ``pid`` (this one, normally; tests stand in other processes so)."""
        return cls(uuid.uuid4().hex, _host(), pid, _start_ticks(pid))

    def encode(self) -> str:
        return "/".join((self.token, self.host or "-", str(self.pid), str(self.started or "-")))

    @classmethod
    def decode(cls, text: str) -> LeaseOwner | None:
        """The owner a lease records, or None for one this bridge cannot read (an older version wrote it)."""
        parts = text.split("/")
        if len(parts) != 4 or not ascii_digits(parts[2]):
            return None
        token, host, pid, started = parts
        return cls(token, None if host == "-" else host, int(pid), int(started) if ascii_digits(started) else None)


def owner_is_gone(owner: str) -> bool:
    """True if the lease's owner was a process on this host that no longer runs (exited, killed, a zombie).

    False whenever that cannot be known: another host, another pid namespace (a restarted container has a new
    one), an unreadable owner. Reads /proc, which the kernel answers from memory: nothing waits on a disk.
    """
    holder = LeaseOwner.decode(owner)
    if holder is None or holder.host is None or holder.started is None or holder.host != _host():
        return False
    return _start_ticks(holder.pid) != holder.started


def held_lease(
    element_id: int, take: TakeLease, release: ReleaseLease, keeper: LeaseKeeper, *, wait_seconds: float
) -> HeldLeaseContext:
    """The lease rule of every state store: take the element's lease (``acquire``), have ``keeper`` extend it while
    it is held, and give it back (``release``, with the mark given to the ``HeldLease``) when the block ends, also
    when it raised or was cancelled."""
    return HeldLeaseContext(element_id, take, release, keeper, wait_seconds)


class HeldLeaseContext:
    """What ``held_lease`` returns: ``async with`` it holds the lease (a class, not an @asynccontextmanager: every
    message enters one, and a generator-based context costs about three times as much)."""

    __slots__ = ("_element_id", "_held", "_keeper", "_release", "_take", "_wait_seconds")

    def __init__(
        self, element_id: int, take: TakeLease, release: ReleaseLease, keeper: LeaseKeeper, wait_seconds: float
    ) -> None:
        self._element_id = element_id
        self._take = take
        self._release = release
        self._keeper = keeper
        self._wait_seconds = wait_seconds

    async def __aenter__(self) -> HeldLease:
        # Re-entered by its owner: the lease already held, which only the outermost block's end gives back (with
        # the mark any of them gave it).
        held = self._keeper.holding(self._element_id)
        if held is None:
            held = await acquire(self._element_id, self._take, wait_seconds=self._wait_seconds)
        self._keeper.taken(self._element_id, held)
        self._held = held
        return held

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._keeper.released(self._element_id):
            await self._release(self._held)


async def acquire(element_id: int, take: TakeLease, *, wait_seconds: float) -> HeldLease:
    """Take the element's lease, waiting up to ``wait_seconds`` for a live holder; else raise ``ElementBusy``.

    A holder whose process is gone is replaced at once, whatever its expiry says.
    """
    deadline = monotonic() + wait_seconds
    delay = 0.05
    replacing: str | None = None
    while isinstance(holder := await take(element_id, replacing), str):
        if holder and holder != replacing and owner_is_gone(holder):
            replacing = holder
            continue
        if monotonic() + delay > deadline:
            raise ElementBusy(f"element {element_id} is being processed by another worker (lease owner {holder})")
        # Jitter, so two workers waiting for the same element do not retry in lockstep.
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(MAX_POLL_SECONDS, delay * 2)
    if replacing is not None:
        log.warning("lease_taken_over", element_id=element_id, previous_owner=replacing, reason="its process is gone")
    return holder


@cache
def _host() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}.{namespace}"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot); None if there is no such process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


# Tries to take a sweep's lease (``StateStore.take_sweep_lease``); ``replacing`` as for ``TakeLease``. Returns None
# once the lease is taken, else its holder's owner text ("" if it was released meanwhile).
TakeSweepLease = Callable[[str | None], Awaitable[str | None]]


async def try_sweep_lease(sweep: str, take: TakeSweepLease) -> bool:
    """Take the sweep's lease once, without waiting for a live holder: a sweep has its next round for that. A holder
    whose process is gone (on this host) is replaced at once, as ``acquire`` replaces an element's."""
    holder = await take(None)
    if holder is None:
        return True
    if holder and owner_is_gone(holder) and await take(holder) is None:
        log.warning("lease_taken_over", sweep=sweep, previous_owner=holder, reason="its process is gone")
        return True
    return False


# Extends the given leases if this process still owns them; returns the ones it no longer owns.
Extend = Callable[[list[int]], Awaitable[set[int]]]


@dataclass(slots=True)
class _Held:
    lease: HeldLease
    depth: int  # a lease is re-entrant for its owner
    since: float  # monotonic time it was taken or last extended


class LeaseKeeper:
    def __init__(self, lease_seconds: float, extend: Extend, *, enabled: bool = True) -> None:
        self.interval = lease_seconds / 3
        # Half the interval between looks: ticking once per interval, a lease taken just after a tick was first
        # extended two thirds into its life, and one extension that failed after a few seconds let it expire
        # before the next tick under its live holder.
        self.tick = self.interval / 2
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

    def holding(self, element_id: int) -> HeldLease | None:
        """The element's lease if this store holds it (a block of its owner is running with it), else None."""
        held = self._held.get(element_id)
        return None if held is None else held.lease

    def taken(self, element_id: int, lease: HeldLease) -> None:
        held = self._held.get(element_id)
        if held is None:
            self._held[element_id] = _Held(lease, 1, monotonic())
        else:
            held.depth += 1

    def released(self, element_id: int) -> bool:
        """One block holding the element ended; True if none holds it any longer (the store gives the lease back),
        also when the keeper found it lost and stopped counting it."""
        held = self._held.get(element_id)
        if held is None:
            return True
        held.depth -= 1
        if held.depth > 0:
            return False
        del self._held[element_id]
        return True

    async def extend_due(self) -> None:
        """Extend the leases held for ``interval`` or longer (what each tick of the keeper does)."""
        now = monotonic()
        due = {element_id: held for element_id, held in self._held.items() if now - held.since >= self.interval}
        if not due:
            return
        try:
            lost = await self._extend(list(due))
        except Exception as error:  # the store is unreachable: try again next tick, the leases have half left
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
                    "element over; its release marks the element for a re-sync, which rewrites its channels",
                )
            else:
                held.since = now

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            await self.extend_due()
