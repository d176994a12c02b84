"""The diagnostic variants: the real worker with one part replaced, installed before ``bridge run`` starts.

- ``queue-only``: the consumer, the SQS transport and the work slots are the bridge's; each message's work is the
  simple loop's own ``sync_element`` (GET, POST, PATCH over one aiohttp session), then ``Done``. Against the
  simple loop it measures the bridge's queue layer; against ``bridge`` the whole pipeline.
- ``memory-state``: the whole pipeline, with the state store in process dicts instead of SQLite (one worker, no
  durability). Against ``bridge`` it measures what the SQLite store costs per message.
- ``local-leases``: the real SQLite store, but an element's lease is held in process, not in the ``leases`` table
  (one worker per file): no lease write and no release statement; the mark is recorded on its own as the lease
  ends. Against ``bridge`` it measures what leases shared through the file cost per message.
- ``lean-http``: the whole pipeline, with ``HttpClient``'s requests (Kordiam's and the channel's) sent by a minimal
  HTTP/1.1 client (``lean_http``) instead of aiohttp's; the SQS calls stay on aiobotocore. Against ``bridge`` it
  measures what aiohttp's client machinery costs per message beyond the bytes on the wire.

A variant announces itself on stderr (``MARKER``); ``bench.run`` refuses a run whose worker log lacks it, so a
variant that silently failed to install never passes for a measurement.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp

import bridge.worker
from bench.diagnostics import MARKER, VARIANTS, lean_http
from bench.simple_loop import sync_element
from bridge.config import StateSettings
from bridge.pipeline.handler import MessageHandler
from bridge.queue.outcome import Done, Outcome
from bridge.queue.transport import QueueMessage
from bridge.state.base import (
    Delivery,
    DeliveryCounts,
    ElementBusy,
    ElementMark,
    ElementRecord,
    HeldLease,
    Parked,
    RecordedDelivery,
    StateStore,
    count_deliveries,
    is_older,
    new_generation,
)
from bridge.state.sqlite import SqliteStateStore


def install(variant: str) -> None:
    if variant == "queue-only":
        _queue_only()
    elif variant == "memory-state":
        _memory_state()
    elif variant == "local-leases":
        _local_leases()
    elif variant == "lean-http":
        lean_http.install()
    else:
        sys.exit(f"BENCH_DIAGNOSTIC: unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    print(f"{MARKER} {variant}", file=sys.stderr, flush=True)


def _queue_only() -> None:
    sessions: list[aiohttp.ClientSession] = []  # one, made on the worker's event loop at its first message

    async def handle(self: MessageHandler, message: QueueMessage) -> Outcome:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        engine = self._engine  # its work slots and Kordiam base URL, as the real sync uses them
        async with engine._slot():
            await sync_element(sessions[0], engine._kordiam._base, json.loads(message.body)["id"])
        return Done()

    MessageHandler.__call__ = handle  # type: ignore[method-assign]


def _local_leases() -> None:
    leased: set[int] = set()

    def lease(self: SqliteStateStore, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        return in_process_lease(self, leased, element_id)

    SqliteStateStore.lease = lease  # type: ignore[method-assign]


@asynccontextmanager
async def in_process_lease(store: StateStore, leased: set[int], element_id: int) -> AsyncIterator[HeldLease]:
    """An element's lease held in this process only (``leased``): one worker; the engine's keyed lock makes a
    second sync of the element here the exception. A mark given to it is recorded with ``mark_element``."""
    if element_id in leased:
        raise ElementBusy(f"element {element_id} is leased")
    leased.add(element_id)
    held = HeldLease(element_id)
    try:
        yield held
    finally:
        if held.mark is not None:
            await store.mark_element(held.mark)
        leased.discard(element_id)


def _memory_state() -> None:
    async def open_memory_store(
        settings: StateSettings,
        *,
        default_region: str | None = None,
        read_only: bool = False,
        check_access: bool = False,
    ) -> StateStore:
        return MemoryStateStore()

    # What `bridge run` opens its store with (imported by name into bridge.worker, so patched there).
    bridge.worker.open_state_store = open_memory_store  # type: ignore[attr-defined]


class MemoryStateStore:
    """The ``StateStore`` contract in dicts, indexed by element; one process only, nothing survives it."""

    reads_in_process = True

    def __init__(self) -> None:
        self._deliveries: dict[int, dict[tuple[str, int], Delivery]] = {}
        self._marks: dict[int, ElementMark] = {}
        self._parks: dict[tuple[str, int], Parked] = {}
        self._leased: set[int] = set()
        self._sweep_cursors: dict[str, datetime] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def probe(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    def lease(self, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        return in_process_lease(self, self._leased, element_id)

    async def deliveries(self, element_id: int) -> list[Delivery]:
        return list(self._deliveries.get(element_id, {}).values())

    async def deliveries_with_external_id(self, external_id: str) -> list[Delivery]:
        return [d for held in self._deliveries.values() for d in held.values() if d.external_id == external_id]

    async def deliveries_of_publication(self, publication_id: int) -> list[Delivery]:
        return [d for held in self._deliveries.values() for d in held.values() if d.publication_id == publication_id]

    async def record(self, delivery: Delivery) -> bool:
        held = self._deliveries.setdefault(delivery.element_id, {})
        key = (delivery.channel, delivery.publication_id)
        previous = held.get(key)
        newer = (delivery.modification_date, delivery.version)
        if previous is not None and is_older(newer, (previous.modification_date, previous.version)):
            return False
        held[key] = delivery
        return True

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        self._deliveries.get(element_id, {}).pop((channel, publication_id), None)

    async def element_mark(self, element_id: int) -> ElementMark | None:
        return self._marks.get(element_id)

    async def element_record(self, element_id: int) -> ElementRecord:
        held = sorted(self._deliveries.get(element_id, {}).items())
        return ElementRecord(
            element_id, self._marks.get(element_id), [RecordedDelivery(d, None) for _, d in held], None
        )

    async def mark_element(self, mark: ElementMark) -> None:
        held = self._marks.get(mark.element_id)
        if held is not None and held.fetched_at is not None:
            if mark.fetched_at is None:
                mark = replace(mark, fetched_at=held.fetched_at)
            elif mark.fetched_at < held.fetched_at:
                return
        # A mark clears the re-sync token its sync read (``ElementMark.resync``), never sets one.
        kept = held.resync if held is not None and held.resync != mark.resync else None
        mark = replace(mark, resync=kept)
        self._marks[mark.element_id] = mark

    async def all_deliveries(self) -> list[Delivery]:
        return [d for held in self._deliveries.values() for d in held.values()]

    async def delivery_counts(self, limit: int) -> DeliveryCounts:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # as the real stores refuse it
        # In process, as SQLite's: counted whole.
        held = [delivery for by_key in self._deliveries.values() for delivery in by_key.values()]
        counts = count_deliveries((d.channel, d.element_id, d.live, d.modification_date) for d in held)
        return DeliveryCounts(counts, complete=True, read=len(held))

    async def park(self, element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        held = self._parks.get((channel, element_id))
        since = held.since if held is not None else (since or datetime.now(UTC))  # the first parking's time stays
        generation = new_generation()
        self._parks[(channel, element_id)] = Parked(element_id, channel, reason, since, generation)

    async def unpark(self, element_id: int, channel: str, *, generation: int | None = None) -> None:
        held = self._parks.get((channel, element_id))
        if held is not None and (generation is None or held.generation == generation):
            del self._parks[(channel, element_id)]

    async def parked(self, channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # as the real stores refuse it
        found = sorted(e for c, e in self._parks if c == channel and (after is None or e > after))
        return [self._parks[(channel, e)] for e in found[:limit]]

    async def parked_count(self, channel: str) -> int:
        return sum(1 for c, _ in self._parks if c == channel)

    async def parked_channels(self) -> list[str]:
        return sorted({c for c, _ in self._parks})

    async def sweep_cursor(self, sweep: str) -> datetime | None:
        return self._sweep_cursors.get(sweep)

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        held = self._sweep_cursors.get(sweep)
        self._sweep_cursors[sweep] = to if held is None else max(held, to)

    async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
        return True  # one process: no other worker to share the sweep with

    async def release_sweep_lease(self, sweep: str) -> None:
        return None
