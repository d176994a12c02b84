"""The SQLite state store's work for one message, warm and with the CPU caches emptied before each step.

    python -m bench.state_statements [--messages 2000] [--cold]

Per message, through the store's own API, one message at a time (so every write is a commit of its own, as at
C=32 in `make bench`): take the element's lease (which reads its mark), read its deliveries, record a delivery,
and release the lease with the element's mark. Prints the CPU per message (the median, and the mean). ``--cold`` copies
24 MB before each step, standing in for LocalStack and the stubs, which run on the machine's two cores between a
message's events in `make bench` and leave the worker's caches cold: that, not the warm figure, is what the
worker pays (`bench/PERFORMANCE_LOG.md`, "Then, on 2026-12-05, JSON through orjson").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bridge.state import SqliteStateStore
from bridge.state.base import Delivery, ElementMark

MODIFIED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
EVICTION = bytearray(24 * 1024 * 1024)


async def measure(messages: int, cold: bool) -> list[float]:
    spent: list[float] = []

    def evict() -> None:
        if cold:
            bytes(EVICTION)

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStateStore(Path(folder) / "state.db")
        await store.open()
        try:
            for element_id in range(1, messages + 1):
                cpu = 0
                evict()
                started = time.thread_time_ns()
                lease = store.lease(element_id)
                held = await lease.__aenter__()
                if not held.mark_at_take_known:  # what the sync engine reads under the lease, unless the take did
                    await store.element_mark(element_id)
                await store.deliveries(element_id)
                cpu += time.thread_time_ns() - started
                evict()
                started = time.thread_time_ns()
                await store.record(_delivery(element_id))
                cpu += time.thread_time_ns() - started
                evict()
                started = time.thread_time_ns()
                held.mark_on_release(ElementMark(element_id, MODIFIED, 3, deleted=False, fetched_at=time.time()))
                await lease.__aexit__(None, None, None)
                cpu += time.thread_time_ns() - started
                spent.append(cpu / 1000)
            # The figures stand for the work only if it was done: every element delivered, marked and released.
            last = await store.element_mark(messages)
            if (
                last is None
                or len(await store.deliveries(messages)) != 1
                or len(await store.all_deliveries()) != messages
            ):
                raise RuntimeError("bench.state_statements: the store did not record every message")
        finally:
            await store.close()
    return spent


def _delivery(element_id: int) -> Delivery:
    return Delivery(
        element_id=element_id,
        channel="cms",
        publication_id=element_id * 10,
        external_id=f"ext-{element_id}",
        fingerprint="2:" + "ab" * 16,
        modification_date=MODIFIED,
        version=3,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_statements", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--cold", action="store_true", help="empty the CPU caches before each step")
    args = parser.parse_args(argv)
    if args.messages < 200:
        parser.error("--messages must be at least 200 (the first 100 are a warm-up)")
    spent = asyncio.run(measure(args.messages, args.cold))[100:]
    print(
        f"bench.state_statements: {statistics.median(spent):.0f} µs of CPU per message (median; mean "
        f"{statistics.mean(spent):.0f}), {'cold' if args.cold else 'warm'} caches, {len(spent)} messages"
    )


if __name__ == "__main__":
    main()
