"""The SQLite state store: leases across store instances (as across processes), conditional records, migration."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.config import StateSettings
from bridge.errors import ConfigError
from bridge.state import SqliteStateStore, open_state_store
from bridge.state.base import Delivery, ElementBusy, ElementMark, is_older
from bridge.state.sqlite import SCHEMA_VERSION

StoreFactory = Callable[..., Awaitable[SqliteStateStore]]
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Open stores on one file, each with its own connection and owner, like separate worker processes."""
    opened: list[SqliteStateStore] = []

    async def factory(path: Path | None = None, **options: Any) -> SqliteStateStore:
        store = SqliteStateStore(path or tmp_path / "state.db", **options)
        opened.append(store)  # before open(): a failed open leaves its connection to close
        await store.open()
        return store

    yield factory
    for store in opened:
        await store.close()


def delivery(
    element_id: int = 1,
    channel: str = "web",
    publication_id: int = 10,
    *,
    modification_date: datetime | None = T0,
    version: int | None = 1,
    external_id: str = "ext-1",
    **fields: Any,
) -> Delivery:
    return Delivery(
        element_id=element_id,
        channel=channel,
        publication_id=publication_id,
        external_id=external_id,
        fingerprint=f"fp-{version}",
        modification_date=modification_date,
        version=version,
        **fields,
    )


# ---- leases ----------------------------------------------------------------------------------------------------


async def test_lease_is_exclusive_across_stores(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=0.2)
    async with first.lease(1):
        with pytest.raises(ElementBusy):
            async with second.lease(1):
                pytest.fail("two stores held one element")
        async with second.lease(2):
            pass
    async with second.lease(1):
        pass


async def test_waiting_store_gets_the_lease_once_released(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=5)
    order: list[str] = []

    async def hold() -> None:
        async with first.lease(1):
            order.append("first in")
            await asyncio.sleep(0.3)
            order.append("first out")

    async def wait() -> None:
        await asyncio.sleep(0.05)
        async with second.lease(1):
            order.append("second in")

    await asyncio.gather(hold(), wait())
    assert order == ["first in", "first out", "second in"]


async def test_expired_lease_is_taken_over(stores: StoreFactory) -> None:
    first = await stores(lease_seconds=0.3, keep_leases=False)  # a worker whose event loop hangs, or died
    second = await stores(lease_wait_seconds=0)
    third = await stores(lease_wait_seconds=0)
    lease = first.lease(1)
    await lease.__aenter__()
    with pytest.raises(ElementBusy):
        async with second.lease(1):
            pass
    await asyncio.sleep(0.4)
    async with second.lease(1):
        # The stale holder's release must not free the element for anyone else.
        await lease.__aexit__(None, None, None)
        with pytest.raises(ElementBusy):
            async with third.lease(1):
                pass


async def test_a_working_holder_keeps_its_lease_past_lease_seconds(stores: StoreFactory) -> None:
    holder = await stores(lease_seconds=0.6)
    other = await stores(lease_wait_seconds=0)
    async with holder.lease(1):
        for _ in range(8):  # 2 s: more than three lease lifetimes
            with pytest.raises(ElementBusy):
                async with other.lease(1):
                    pass
            await asyncio.sleep(0.25)
    async with other.lease(1):
        pass


async def test_lease_is_reentrant_for_its_owner(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    async with store.lease(1), store.lease(1):
        with pytest.raises(ElementBusy):
            async with other.lease(1):
                pass


# ---- conditional records ---------------------------------------------------------------------------------------


async def test_older_version_is_refused_equal_and_newer_accepted(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    assert await store.record(delivery(version=1, external_id="a"))
    assert await other.record(delivery(version=2, external_id="b"))
    assert not await store.record(delivery(version=1, external_id="c"))
    assert await store.record(delivery(version=2, external_id="d"))
    assert not await store.record(delivery(modification_date=T0 - timedelta(seconds=1), version=9))
    assert await store.record(delivery(modification_date=T0 + timedelta(seconds=1), version=1, external_id="e"))
    [stored] = await other.deliveries(1)
    assert (stored.external_id, stored.version, stored.modification_date) == ("e", 1, T0 + timedelta(seconds=1))


async def test_record_ordering_matches_is_older(stores: StoreFactory) -> None:
    store = await stores()
    dates = [None, T0, T0 + timedelta(microseconds=1), T0.astimezone(timezone(timedelta(hours=1)))]
    values = list(itertools.product(dates, [None, 1, 2]))
    for element, (stored, new) in enumerate(itertools.product(values, values), start=1):
        assert await store.record(delivery(element, modification_date=stored[0], version=stored[1]))
        expected = not is_older(new, stored)
        assert await store.record(delivery(element, modification_date=new[0], version=new[1])) == expected, (
            f"stored {stored}, new {new}"
        )


async def test_concurrent_records_from_two_stores_keep_the_newest(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores()

    def write(store: SqliteStateStore, element: int, version: int) -> Awaitable[bool]:
        return store.record(
            delivery(
                element, version=version, modification_date=T0 + timedelta(seconds=version), external_id=f"v{version}"
            )
        )

    await asyncio.gather(
        *(
            asyncio.gather(write(first, n, 1), write(second, n, 2))
            if n % 2
            else asyncio.gather(write(first, n, 2), write(second, n, 1))
            for n in range(1, 21)
        )
    )
    assert {(d.version, d.external_id) for d in await first.all_deliveries()} == {(2, "v2")}


async def test_record_keeps_every_field(stores: StoreFactory) -> None:
    store = await stores()
    full = delivery(
        7,
        "print",
        70,
        edit_link="https://cms.example/edit/7",
        open_link="https://example.org/7",
        live=True,
        edit_link_title="Edit",
        open_link_title="Open",
    )
    bare = delivery(7, "web", 71, modification_date=None, version=None)
    assert await store.record(full)
    assert await store.record(bare)
    assert await store.deliveries(7) == [full, bare]


# ---- opening and migrating -------------------------------------------------------------------------------------


async def test_two_stores_migrate_one_new_file_at_once(stores: StoreFactory, tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"fresh-{attempt}" / "state.db"
        opened = await asyncio.gather(stores(path), stores(path), stores(path))
        assert await opened[0].record(delivery())
        assert [d.external_id for d in await opened[1].deliveries(1)] == ["ext-1"]
        with sqlite3.connect(path) as db:
            versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))


async def test_reopening_keeps_the_data(stores: StoreFactory, tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    assert await store.record(delivery())
    await store.close()
    again = await stores()
    assert [d.external_id for d in await again.deliveries(1)] == ["ext-1"]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    store = SqliteStateStore(path)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url" and "newer" in raised.value.problem


async def test_open_state_store_opens_sqlite(tmp_path: Path) -> None:
    store = await open_state_store(StateSettings(url=f"sqlite:///{tmp_path / 'sub' / 'state.db'}"))
    try:
        assert isinstance(store, SqliteStateStore)
        assert await store.element_mark(1) is None
    finally:
        await store.close()


# ---- forget and marks ------------------------------------------------------------------------------------------


async def test_forget_and_all_deliveries(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    for element, channel, publication in [(2, "web", 20), (2, "print", 21), (1, "web", 10)]:
        assert await store.record(delivery(element, channel, publication))
    assert [(d.element_id, d.channel, d.publication_id) for d in await other.all_deliveries()] == [
        (1, "web", 10),
        (2, "print", 21),
        (2, "web", 20),
    ]
    await store.forget(2, "web", 20)
    await store.forget(2, "web", 99)
    assert [d.publication_id for d in await other.deliveries(2)] == [21]


async def test_marks_round_trip(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    assert await store.element_mark(4) is None
    await store.mark_element(ElementMark(4, T0, 3, deleted=False))
    assert await other.element_mark(4) == ElementMark(4, T0, 3, deleted=False)
    await store.mark_element(ElementMark(4, None, None, deleted=True))
    assert await other.element_mark(4) == ElementMark(4, None, None, deleted=True)


# ---- never blocking the event loop -----------------------------------------------------------------------------


async def test_a_locked_file_is_waited_for_off_the_event_loop(stores: StoreFactory, tmp_path: Path) -> None:
    # Another process holds the write lock for a while: the store's write must neither fail at once nor stall
    # the event loop; it waits on the store's thread and lands when the lock is released.
    store = await stores()
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(store.record(delivery(9)))
    await asyncio.sleep(0.5)
    assert not writing.done()
    assert ticks >= 20  # the loop kept running while the write waited
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(writing, 5)
    ticking.cancel()
    assert [d.element_id for d in await store.deliveries(9)] == [9]


async def test_the_wal_is_checkpointed_off_the_loop(stores: StoreFactory, tmp_path: Path) -> None:
    # The loop's connection never checkpoints (a checkpoint fsyncs); the store asks its thread to, regularly, so
    # the WAL is reused from its start instead of growing with every commit.
    store = await stores()
    for n in range(1500):
        await store.mark_element(ElementMark(n, T0, n, deleted=False))
        if n % 100 == 0:
            await asyncio.sleep(0.005)  # a worker waits on the network between writes; the thread runs then
    await asyncio.sleep(0.2)
    page_size = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA page_size").fetchone()[0]
    frames = ((tmp_path / "state.db-wal").stat().st_size - 32) // (page_size + 24)
    assert frames < 1000  # one frame or more per commit without checkpoints
