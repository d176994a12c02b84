"""The SQLite store's own behaviour: migrations, reopening, never blocking the event loop on a locked file.

What every store promises (leases, conditional records, marks) is tested on SQLite and DynamoDB alike in
tests/integration/test_state_contract.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from bridge.config import StateSettings
from bridge.errors import ConfigError
from bridge.state import Delivery, SqliteStateStore, open_state_store
from bridge.state.base import ElementBusy, ElementMark, StateUnavailable
from bridge.state.sqlite import (
    CHECKPOINT_EVERY_WRITES,
    MIGRATIONS,
    PROBE_ROOM_BYTES,
    SCHEMA_VERSION,
    WAL_SYNC_SECONDS,
    _iso,
    _others_ready,
    _transaction,
)
from tests.support import T0, delivery, eventually, fill, opened_stores, small_filesystem

StoreFactory = Callable[..., Awaitable[SqliteStateStore]]


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Open stores on one file, each with its own connection and owner, like separate worker processes."""

    def make(path: Path | None = None, **options: Any) -> SqliteStateStore:
        return SqliteStateStore(path or tmp_path / "state.db", **options)

    async with opened_stores(make) as factory:
        yield factory


# ---- opening and migrating -------------------------------------------------------------------------------------


async def test_two_stores_migrate_one_new_file_at_once(stores: StoreFactory, tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"fresh-{attempt}" / "state.db"
        path.parent.mkdir()
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


async def test_a_version_2_file_gains_fetch_times_and_keeps_its_marks(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, 2)
        db.execute("INSERT INTO elements VALUES (7, NULL, 3, 0, '2026-01-01T00:00:00Z')")
    store = SqliteStateStore(path)
    await store.open()
    try:
        assert await store.element_mark(7) == ElementMark(7, None, 3, deleted=False, fetched_at=None)
        await store.mark_element(ElementMark(7, None, 4, deleted=False, fetched_at=12.5))
        assert await store.element_mark(7) == ElementMark(7, None, 4, deleted=False, fetched_at=12.5)
    finally:
        await store.close()


async def test_a_version_3_file_gains_the_lookup_indexes_and_finds_its_deliveries(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, 3)
        db.execute(
            "INSERT INTO deliveries (element_id, channel, publication_id, external_id, fingerprint, updated_at) "
            "VALUES (7, 'web', 70, 'post-55', 'fp', '2026-01-01T00:00:00Z')"
        )
    store = SqliteStateStore(path)
    await store.open()
    try:
        assert [(d.element_id, d.publication_id) for d in await store.deliveries_with_external_id("post-55")] == [
            (7, 70)
        ]
        assert [d.external_id for d in await store.deliveries_of_publication(70)] == ["post-55"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
        plans = [
            " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM deliveries WHERE {where}"))
            for where in ("external_id = 'x'", "publication_id = 70")
        ]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert "USING INDEX deliveries_by_external_id" in plans[0]
    assert "USING INDEX deliveries_by_publication_id" in plans[1]


async def test_a_version_4_file_keeps_its_marks_and_the_leases_held_in_it(stores: StoreFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, 4)
        db.execute("INSERT INTO elements VALUES (7, '2026-03-01T09:30:00.000000Z', 3, 0, '2026-03-01', 12.5)")
        db.execute("INSERT INTO elements VALUES (8, NULL, NULL, 1, '2026-03-01', NULL)")
        # A worker of the earlier version holds 7 (marked before) and 9 (never marked) for a while yet.
        db.executemany("INSERT INTO leases VALUES (?, 'earlier-worker', 4102444800)", [(7,), (9,)])
    store = await stores(lease_wait_seconds=0)
    assert await store.element_mark(7) == ElementMark(7, T0, 3, deleted=False, fetched_at=12.5)
    assert await store.element_mark(8) == ElementMark(8, None, None, deleted=True)
    assert await store.element_mark(9) is None
    for held in (7, 9):
        with pytest.raises(ElementBusy, match="earlier-worker"):
            async with store.lease(held):
                pytest.fail("a lease held before the migration must still be held after it")
    async with store.lease(8) as lease:
        assert lease.mark_at_take == ElementMark(8, None, None, deleted=True)
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "leases" not in tables and "elements_v5" not in tables


async def test_a_version_5_file_gains_the_parked_table_and_keeps_its_rows(stores: StoreFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, 5)
        db.execute(
            "INSERT INTO deliveries (element_id, channel, publication_id, external_id, fingerprint, updated_at) "
            "VALUES (7, 'web', 70, 'post-55', 'fp', '2026-01-01T00:00:00Z')"
        )
        db.execute(
            "INSERT INTO elements VALUES (7, '2026-03-01T09:30:00.000000Z', 3, 0, 12.5, '2026-03-01', NULL, NULL)"
        )
        db.execute("INSERT INTO elements VALUES (9, NULL, NULL, 0, NULL, NULL, 'earlier-worker', 4102444800)")
    store = await stores(lease_wait_seconds=0)
    assert [(d.element_id, d.external_id) for d in await store.deliveries(7)] == [(7, "post-55")]
    assert await store.element_mark(7) == ElementMark(7, T0, 3, deleted=False, fetched_at=12.5)
    with pytest.raises(ElementBusy, match="earlier-worker"):
        async with store.lease(9):
            pytest.fail("a lease held before the migration must still be held after it")
    assert await store.parked("web") == [] and await store.parked_count("web") == 0
    await store.park(7, "web", "401 Unauthorized")
    assert [(p.element_id, p.reason) for p in await store.parked("web")] == [(7, "401 Unauthorized")]
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT element_id, reason, since FROM parked "
                "WHERE channel = 'web' AND element_id > 5 ORDER BY element_id LIMIT 100"
            )
        )
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    # A range of the key, in its order: no scan, no sort.
    assert "SEARCH parked USING PRIMARY KEY" in plan and "TEMP B-TREE" not in plan


async def test_a_version_7_file_gains_the_sweeps_table_and_keeps_its_rows(stores: StoreFactory, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, 7)
        db.execute(
            "INSERT INTO elements VALUES "
            "(7, '2026-03-01T09:30:00.000000Z', 3, 0, 12.5, '2026-03-01', NULL, NULL, 'tok')"
        )
        db.execute("INSERT INTO parked VALUES ('web', 7, '401 Unauthorized', '2026-03-01T09:30:00.000000Z', 5)")
    store = await stores()
    assert await store.element_mark(7) == ElementMark(7, T0, 3, deleted=False, fetched_at=12.5, resync="tok")
    assert [(p.element_id, p.generation) for p in await store.parked("web")] == [(7, 5)]
    assert await store.sweep_cursor("reconcile") is None
    await store.advance_sweep_cursor("reconcile", T0)
    assert await store.sweep_cursor("reconcile") == T0
    assert await store.take_sweep_lease("reconcile", seconds=60)
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def _migrate_up_to(db: sqlite3.Connection, last: int) -> None:
    """Make ``db`` a file of schema version ``last``, as a bridge of that version left it."""
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in range(1, last + 1):
        for statement in filter(str.strip, MIGRATIONS[version].split(";")):
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?)", (version,))


async def test_a_read_only_store_reads_the_deliveries_and_changes_nothing_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = SqliteStateStore(path)
    await writer.open()
    try:
        assert await writer.record(delivery())
        before = path.read_bytes()
        reader = SqliteStateStore(path, read_only=True)  # `status` beside a running worker
        await reader.open()
        try:
            assert [d.element_id for d in await reader.all_deliveries()] == [delivery().element_id]
            # `kordiam-bridge element`: one element's record, read without a connection on the loop.
            assert [r.delivery for r in (await reader.element_record(delivery().element_id)).deliveries] == [delivery()]
        finally:
            await reader.close()
        assert path.read_bytes() == before
    finally:
        await writer.close()


async def test_a_read_only_store_leaves_an_older_file_unmigrated(tmp_path: Path) -> None:
    # A newer `status` must not migrate a file that workers of the earlier version still use.
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, SCHEMA_VERSION - 1)
    store = SqliteStateStore(path, read_only=True)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url" and f"schema version {SCHEMA_VERSION - 1}" in raised.value.problem
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION - 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] != "wal"


async def test_a_read_only_store_on_an_empty_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    store = SqliteStateStore(path, read_only=True)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert "is empty" in raised.value.problem and path.read_bytes() == b""


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


async def test_a_state_url_naming_another_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("[queue]\nurl = 'x'\n" * 50)  # state.url pointed at the config file by mistake
    store = SqliteStateStore(config)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url" and "is not a SQLite database" in raised.value.problem
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE deliveries (id INTEGER)")
    store = SqliteStateStore(other)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url" and "not a kordiam-bridge state database" in raised.value.problem


async def test_a_file_sqlite_cannot_write_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await (await open_state_store(StateSettings(url=f"sqlite:///{path}"))).close()
    # SQLite cannot make its shared-memory file beside the database: as on a read-only file system.
    (tmp_path / "state.db-shm").unlink(missing_ok=True)
    (tmp_path / "state.db-shm").mkdir()
    store = SqliteStateStore(path)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url" and f"cannot open SQLite database {path}: " in raised.value.problem


def _foreign(path: Path, *statements: str) -> bytes:
    """Another application's SQLite database at ``path``, made by ``statements``; returns the file's bytes."""
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("statements", "tables"),
    [
        (["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO users VALUES (1, 'ann')"], "users"),
        # A schema_version of its own, of another shape: before, "no such column: version" as a traceback.
        (["CREATE TABLE schema_version (applied TEXT)", "CREATE TABLE posts (id INTEGER)"], "posts, schema_version"),
        # One whose schema_version looks like the bridge's: before, migrated on up to a failing statement.
        (
            ["CREATE TABLE schema_version (version INTEGER NOT NULL)", "INSERT INTO schema_version VALUES (3)"],
            "schema_version",
        ),
        (["CREATE TABLE a (x)", "CREATE VIEW b AS SELECT x FROM a"], "a, b"),
        ([f"CREATE TABLE t{n} (x)" for n in range(7)], "t0, t1, t2, t3, t4 and 2 more"),
    ],
)
async def test_another_applications_database_is_refused_and_left_as_it_was(
    tmp_path: Path, statements: list[str], tables: str
) -> None:
    # Before: a file with tables but none of the bridge's was switched to WAL and given the bridge's tables.
    path = tmp_path / "other-app.db"
    before = _foreign(path, *statements)
    store = SqliteStateStore(path)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    await store.close()
    assert raised.value.key == "state.url"
    assert raised.value.problem == (
        f"{path} is another application's SQLite database (tables: {tables}), not a kordiam-bridge state "
        "database; point state.url at a file of its own"
    )
    assert path.read_bytes() == before  # not migrated, not even switched to WAL
    assert not Path(f"{path}-wal").exists()


async def test_an_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()  # made ahead, e.g. by a deployment that creates the volume's file
    store = SqliteStateStore(path)
    await store.open()
    try:
        assert await store.record(delivery())
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
async def test_a_file_of_any_earlier_bridge_opens(tmp_path: Path, version: int) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        _migrate_up_to(db, version)
    store = SqliteStateStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert max(row[0] for row in db.execute("SELECT version FROM schema_version")) == SCHEMA_VERSION


async def test_a_state_directory_that_does_not_exist_is_refused_unless_asked_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tpyo' / 'state.db'}"
    with pytest.raises(ConfigError) as raised:
        await open_state_store(StateSettings(url=url))
    assert raised.value.key == "state.url" and "state.create_directories" in raised.value.problem
    assert not (tmp_path / "tpyo").exists()  # no fresh, empty store made by a typo


async def test_a_state_directory_that_cannot_be_made_is_one_line_naming_it(tmp_path: Path) -> None:
    # Before: "cannot open SQLite database …: [Errno 20] Not a directory: '…'", Python's repr of the OSError.
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'state.db'}"
    with pytest.raises(ConfigError) as raised:
        await open_state_store(StateSettings(url=url, create_directories=True))
    assert str(raised.value) == f"state.url: cannot make the directory {tmp_path / 'a-file' / 'sub'}: Not a directory"


@pytest.mark.parametrize("read_only", [False, True], ids=["worker", "operator command"])
async def test_a_state_url_naming_a_directory_is_refused_in_the_same_words_by_every_command(
    tmp_path: Path, read_only: bool
) -> None:
    (tmp_path / "state.db").mkdir()
    with pytest.raises(ConfigError) as raised:
        await SqliteStateStore(tmp_path / "state.db", read_only=read_only).open()
    assert raised.value.key == "state.url"
    assert (
        raised.value.problem
        == f"{tmp_path / 'state.db'} is a directory; name a file in it, e.g. {tmp_path / 'state.db' / 'state.db'}"
    )


@pytest.mark.parametrize("read_only", [False, True], ids=["worker", "operator command"])
async def test_a_state_url_naming_a_pipe_is_refused_not_waited_on(tmp_path: Path, read_only: bool) -> None:
    # Before, SQLite's open of a named pipe waited for a writer for ever: `parked list` hung without a word.
    pipe = tmp_path / "state.db"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError) as raised:
        await SqliteStateStore(pipe, read_only=read_only).open()
    assert (raised.value.key, raised.value.problem) == (
        "state.url",
        f"{pipe} is not a regular file (a pipe, a device or a socket); name a file for the database",
    )


async def test_open_state_store_opens_sqlite(tmp_path: Path) -> None:
    store = await open_state_store(
        StateSettings(url=f"sqlite:///{tmp_path / 'sub' / 'state.db'}", create_directories=True)
    )
    try:
        assert isinstance(store, SqliteStateStore)
        assert await store.element_mark(1) is None
    finally:
        await store.close()


async def test_a_file_damaged_under_the_worker_is_the_state_store_unavailable_not_a_bug(tmp_path: Path) -> None:
    # "database disk image is malformed" is a bare DatabaseError, not an OperationalError: taken for a bug of the
    # handler's, every message would be dead-lettered in turn; as the store's outage, the worker pauses instead.
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    for element in range(1, 400):
        await store.record(Delivery(element, "web", element, f"ext-{element}-" + "x" * 200, "fp"))
    await store.close()
    with sqlite3.connect(path) as db:  # every page in the file itself, none left in the WAL to read instead
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = bytearray(path.read_bytes())
    page_size = int.from_bytes(damaged[16:18], "big")
    damaged[2 * page_size :] = b"\xff" * (len(damaged) - 2 * page_size)  # every page but the schema's two
    path.write_bytes(bytes(damaged))
    store = SqliteStateStore(path)
    await store.open()
    try:
        with pytest.raises(StateUnavailable, match="malformed"):
            await store.deliveries(200)
        with pytest.raises(StateUnavailable, match="malformed"):
            await store.record(Delivery(200, "web", 201, "y", "fp"))
    finally:
        await store.close()


async def test_a_file_locked_past_the_busy_timeout_is_the_state_store_unavailable(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.state.sqlite.BUSY_TIMEOUT_MS", 50)
    store = await stores()
    with sqlite3.connect(tmp_path / "state.db", isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock throughout
        try:
            with pytest.raises(StateUnavailable, match="database is locked"):
                await store.record(delivery())
            with pytest.raises(StateUnavailable, match="database is locked"):
                await store.mark_element(ElementMark(3, T0, 1, deleted=False))
        finally:
            other.execute("ROLLBACK")
    assert await store.record(delivery())


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
async def test_a_file_locked_past_the_busy_timeout_at_open_is_the_store_unavailable_not_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str
) -> None:
    # Before: ConfigError "state.url: cannot open SQLite database …: database is locked" (exit 2, "configuration
    # error"), though nothing in the settings is wrong and the same start works once the other program lets go.
    monkeypatch.setattr("bridge.state.sqlite.BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "state.db"
    first = SqliteStateStore(path)
    await first.open()
    await first.close()
    store = SqliteStateStore(path)
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute(lock)  # an operator's sqlite3 shell left in a transaction, a backup
        try:
            with pytest.raises(StateUnavailable) as raised:
                await store.open()
        finally:
            other.execute("ROLLBACK")
    assert not isinstance(raised.value, ConfigError)
    assert str(raised.value) == (
        f"SQLite {path} is locked by another program (a sqlite3 shell left in a transaction, a backup) for "
        "longer than the busy timeout: database is locked"
    )
    await store.open()  # the same start, once the lock is gone
    await store.close()


# ---- keeping a lease ---------------------------------------------------------------------------------------------


async def test_a_lease_outlives_an_extension_that_failed_slowly(stores: StoreFactory) -> None:
    """One failed extension must leave time for the next: a store call may take a while to fail (DynamoDB's
    timeouts and retries, a file locked up to the busy timeout), and the holder's sync goes on meanwhile. The
    element is taken just after a tick of the keeper, when the first extension comes latest."""
    holder = await stores(lease_seconds=1.2)
    other = await stores(lease_wait_seconds=0)
    keeper = holder._keeper
    extend = keeper._extend
    ticked = asyncio.Event()
    failed: list[float] = []

    async def slow_failure_once(element_ids: list[int]) -> set[int]:
        ticked.set()
        if 1 in element_ids and not failed:
            failed.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.2)  # half of a third of the lease
            raise StateUnavailable("DynamoDB update_item: ReadTimeoutError")
        return await extend(element_ids)

    keeper._extend = slow_failure_once
    async with holder.lease(99):  # held across ticks, so that each tick is seen
        await asyncio.wait_for(ticked.wait(), 2)
        await asyncio.sleep(0.02)  # just past the tick: the next one finds the lease a hair short of due
        async with holder.lease(1):
            for _ in range(100):  # 2 s: more than a lease's life past the failed extension
                with pytest.raises(ElementBusy):
                    async with other.lease(1):
                        pytest.fail("another worker took the element while its holder still synced it")
                await asyncio.sleep(0.02)
    assert failed


async def test_the_keeper_of_a_stalled_holder_finds_its_lease_lost_and_leaves_the_new_holders_alone(
    stores: StoreFactory,
) -> None:
    """A worker whose loop stalled past its lease wakes to another worker holding the element: its keeper's next
    extension must find the lease lost (``lease_lost``, and it stops extending it), not extend the new holder's."""
    stalled = await stores(lease_seconds=0.3, keep_leases=False)  # its keeper ticks only when the test says
    other = await stores(lease_wait_seconds=10)
    lease = stalled.lease(30)
    await lease.__aenter__()
    async with other.lease(30):  # waits out the stalled holder's lease
        taken = (await other.element_record(30)).lease
        with capture_logs() as logs:
            await stalled._keeper.extend_due()
        assert [entry["element_id"] for entry in logs if entry["event"] == "lease_lost"] == [30]
        assert stalled._keeper.holding(30) is None
        assert (await other.element_record(30)).lease == taken
        await lease.__aexit__(None, None, None)


# ---- a mark recorded with the lease's release ------------------------------------------------------------------


async def test_a_mark_given_to_the_lease_is_recorded_in_the_releases_transaction(
    stores: StoreFactory, tmp_path: Path
) -> None:
    store = await stores(lease_wait_seconds=0)
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        commits_before = db.execute("PRAGMA data_version").fetchone()[0]
        async with store.lease(3) as lease:
            lease.mark_on_release(ElementMark(3, T0, 1, deleted=False))
            taken = db.execute("PRAGMA data_version").fetchone()[0]
        released = db.execute("PRAGMA data_version").fetchone()[0]
        assert db.execute("SELECT COUNT(*) FROM elements WHERE lease_owner IS NOT NULL").fetchone()[0] == 0
    # data_version moves once per commit by another connection: the lease taken, then mark and release together.
    assert (taken - commits_before, released - taken) == (1, 1)
    assert await store.element_mark(3) == ElementMark(3, T0, 1, deleted=False)


async def test_the_lease_is_taken_with_the_mark_and_given_back_with_the_next_in_one_statement_each(
    stores: StoreFactory,
) -> None:
    store = await stores(lease_wait_seconds=0)
    await store.mark_element(ElementMark(6, T0, 1, deleted=False))
    statements: list[str] = []
    assert store._loop_db is not None
    store._loop_db.set_trace_callback(lambda sql: statements.append(sql.split()[0]))
    async with store.lease(6) as lease:
        assert lease.mark_at_take_known and lease.mark_at_take == ElementMark(6, T0, 1, deleted=False)
        lease.mark_on_release(ElementMark(6, T0, 2, deleted=False))
    assert statements == ["INSERT", "INSERT"]  # no read of the mark, no BEGIN and COMMIT around the release
    assert await store.element_mark(6) == ElementMark(6, T0, 2, deleted=False)


async def test_the_lease_is_released_when_its_mark_fails(stores: StoreFactory, tmp_path: Path) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    with sqlite3.connect(tmp_path / "state.db") as db:
        # The mark's statement fails; the release must not go down with it.
        db.execute(
            "CREATE TRIGGER refuse_marks BEFORE UPDATE OF modification_date ON elements "
            "BEGIN SELECT RAISE(ABORT, 'marks refused here'); END"
        )
    with pytest.raises(sqlite3.DatabaseError, match="marks refused here"):
        async with store.lease(4) as lease:
            lease.mark_on_release(ElementMark(4, T0, 1, deleted=False))
    async with other.lease(4):
        pass


async def test_a_mark_and_release_on_a_locked_file_wait_off_the_loop(stores: StoreFactory, tmp_path: Path) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    locker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    lease = store.lease(5)
    held = await lease.__aenter__()
    held.mark_on_release(ElementMark(5, T0, 2, deleted=False))
    locker.execute("BEGIN IMMEDIATE")
    releasing = asyncio.create_task(lease.__aexit__(None, None, None))
    await asyncio.sleep(0.2)
    assert not releasing.done()
    locker.execute("COMMIT")
    locker.close()
    await asyncio.wait_for(releasing, 5)
    assert await other.element_mark(5) == ElementMark(5, T0, 2, deleted=False)
    async with other.lease(5):
        pass


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


@pytest.mark.parametrize("writers", [1, 3])
async def test_a_locked_file_holds_back_a_whole_group_commit_off_the_loop(
    stores: StoreFactory, tmp_path: Path, writers: int
) -> None:
    store = await stores()
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writing = [asyncio.create_task(store.record(delivery(n))) for n in range(writers)]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in writing)
    assert await store.element_mark(1) is None  # reads still answer on the loop meanwhile
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(asyncio.gather(*writing), 5) == [True] * writers
    assert [len(await store.deliveries(n)) for n in range(writers)] == [1] * writers


# ---- group commits ---------------------------------------------------------------------------------------------


def _commits(store: SqliteStateStore) -> list[str]:
    """The transactions the store's loop connection ends from now on: COMMIT, or each autocommit write."""
    seen: list[str] = []
    assert store._loop_db is not None
    store._loop_db.set_trace_callback(
        lambda sql: seen.append(sql.split()[0]) if sql.split()[0] in ("COMMIT", "INSERT", "UPDATE", "DELETE") else None
    )
    return seen


async def test_writes_queued_together_share_one_commit(stores: StoreFactory) -> None:
    store = await stores()
    statements = _commits(store)
    assert await asyncio.gather(*(store.record(delivery(n)) for n in range(5))) == [True] * 5
    assert statements == ["INSERT"] * 5 + ["COMMIT"]
    statements.clear()
    assert await store.record(delivery(7))  # alone: autocommit, no BEGIN and COMMIT to pay
    assert statements == ["INSERT"]
    assert [len(await store.deliveries(n)) for n in (*range(5), 7)] == [1] * 6


async def _nothing_ready() -> None:
    """Let the loop run until no other callback waits to run: a quiet worker, as at low concurrency."""
    for _ in range(100):
        if not _others_ready(asyncio.get_running_loop()):
            return
        await asyncio.sleep(0)
    raise AssertionError("the event loop never went quiet")


async def test_a_lone_write_commits_at_once_without_a_pass_of_the_loop(stores: StoreFactory) -> None:
    # Nothing else is ready to run, so no other write could share its commit: it neither queues nor suspends.
    store = await stores()
    statements = _commits(store)
    await _nothing_ready()
    writing = store.record(delivery(1))
    with pytest.raises(StopIteration) as finished:
        writing.send(None)
    assert finished.value.value is True
    assert statements == ["INSERT"]
    assert len(await store.deliveries(1)) == 1


async def test_a_lone_write_that_finds_the_file_locked_waits_for_it_off_the_loop(
    stores: StoreFactory, tmp_path: Path
) -> None:
    store = await stores()
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    # Released from another thread, so that nothing of the test's own waits on the event loop.
    releasing = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releasing.start()
    try:
        await _nothing_ready()
        assert await store.record(delivery(4))
    finally:
        releasing.join()
        other.close()
    assert [d.element_id for d in await store.deliveries(4)] == [4]


async def test_a_failing_write_fails_alone_and_the_rest_of_its_commit_lands(stores: StoreFactory) -> None:
    store = await stores()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        store.record(delivery(1)), store._write(broken), store.record(delivery(2)), return_exceptions=True
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], StateUnavailable) and "no_such_table" in str(results[1])
    assert [len(await store.deliveries(n)) for n in (1, 2)] == [1, 1]


async def test_a_write_cancelled_before_its_commit_is_left_out(stores: StoreFactory) -> None:
    store = await stores()
    cancelled = asyncio.create_task(store.mark_element(ElementMark(1, T0, 1, deleted=False)))
    kept = asyncio.create_task(store.mark_element(ElementMark(2, T0, 1, deleted=False)))
    await asyncio.sleep(0)  # both are queued; the commit runs on the loop's next pass
    cancelled.cancel()
    await asyncio.gather(cancelled, kept, return_exceptions=True)
    assert cancelled.cancelled()
    assert await store.element_mark(1) is None
    assert await store.element_mark(2) is not None


async def test_closing_commits_what_callers_still_wait_for(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    writing = asyncio.create_task(store.record(delivery(3)))
    await asyncio.sleep(0)  # queued, its commit not yet run
    await store.close()
    assert await writing
    again = SqliteStateStore(tmp_path / "state.db")
    await again.open()
    try:
        assert len(await again.deliveries(3)) == 1
    finally:
        await again.close()


async def test_the_wal_is_checkpointed_off_the_loop(stores: StoreFactory, tmp_path: Path) -> None:
    # The loop's connection never checkpoints (a checkpoint fsyncs); the store asks its thread to, regularly, so
    # the WAL is reused from its start instead of growing with every commit.
    store = await stores()
    writes = CHECKPOINT_EVERY_WRITES * 3 // 2
    for n in range(writes):
        await store.mark_element(ElementMark(n, T0, n, deleted=False))
        if n % 100 == 0:
            await asyncio.sleep(0.005)  # a worker waits on the network between writes; the thread runs then
    await asyncio.sleep(0.2)
    page_size = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA page_size").fetchone()[0]
    frames = ((tmp_path / "state.db-wal").stat().st_size - 32) // (page_size + 24)
    assert frames < writes  # without checkpoints: one frame or more per commit


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 22, 13, 36, 11, tzinfo=UTC), "2026-11-22T13:36:11.000000Z"),
        (datetime(2026, 11, 22, 13, 36, 11, 5, tzinfo=timezone(timedelta(hours=-5))), "2026-11-22T18:36:11.000005Z"),
        (datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")), "2026-10-25T00:30:00.000000Z"),
        (datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")), "2026-10-25T01:30:00.000000Z"),
        (datetime(5, 1, 2, 3, 4, 5, 123456), "0005-01-02T03:04:05.123456Z"),  # naive: taken as UTC
    ],
)
def test_a_rows_time_is_fixed_width_utc_text(moment: datetime, text: str) -> None:
    # The text every earlier bridge wrote (rows compare these texts to order times): isoformat's, with a Z.
    assert _iso(moment) == text
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    assert text == naive_utc.isoformat(timespec="microseconds") + "Z"


async def test_flushes_asked_together_share_one_sync_of_the_wal_soon_after_without_waiting_for_it(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    assert await store.record(delivery())
    synced: list[str] = []
    real_fsync = os.fdatasync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr("bridge.state.sqlite.os.fdatasync", fsync)
    # A message's flush only asks for the sync: the acknowledgement does not wait on a thread's round trip.
    await asyncio.gather(*(store.flush() for _ in range(5)))
    assert synced == []
    await eventually(lambda: bool(synced), what="the WAL synced")
    await asyncio.sleep(3 * WAL_SYNC_SECONDS)
    assert synced == [f"{store.path.resolve()}-wal"]
    await store.flush()  # a commit since: the next one is asked for
    await eventually(lambda: len(synced) == 2, what="the WAL synced again")


async def test_a_commit_made_while_the_wal_syncs_is_synced_after_it_without_another_flush(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    assert await store.record(delivery())
    running, release = threading.Event(), threading.Event()
    synced: list[int] = []
    real_fsync = os.fdatasync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == 1:
            running.set()
            release.wait(5)
        real_fsync(descriptor)

    monkeypatch.setattr("bridge.state.sqlite.os.fdatasync", fsync)
    await store.flush()
    await eventually(running.is_set, what="the first sync running")
    # The last message of a burst: its commit and its flush come while the sync runs, and no message follows.
    assert await store.record(delivery(element_id=2))
    await store.flush()
    release.set()
    await eventually(lambda: len(synced) == 2, what="the commit made during the first sync synced")


async def test_syncs_asked_while_one_runs_share_the_next(stores: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await stores()
    assert await store.record(delivery())
    synced: list[int] = []
    real_fsync = os.fdatasync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr("bridge.state.sqlite.os.fdatasync", fsync)
    await asyncio.gather(*(store._sync_now() for _ in range(5)))
    # The first caller's sync, and one more that the four asking while it ran share (their writes may have come
    # after it started).
    assert len(synced) == 2


async def test_a_wal_that_cannot_be_synced_fails_the_probe_naming_the_file(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()

    def fsync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("bridge.state.sqlite.os.fdatasync", fsync)
    # The writes a message makes pass (they stay in the page cache), but they cannot be made durable: the probe
    # fails as the message's flush does, and the worker pauses rather than retry the message through the queue.
    with pytest.raises(StateUnavailable, match=r"state\.db: cannot sync the WAL to disk: Input/output error"):
        await store.probe()
    monkeypatch.undo()
    await store.probe()


async def test_a_write_of_a_group_commit_that_finds_the_disk_full_fails_alone_with_sqlites_words(
    stores: StoreFactory,
) -> None:
    store = await stores()
    # The file may not grow by more than a page or two: as a disk that fills up under a statement.
    loop_db = store._loop_db
    assert loop_db is not None
    pages = loop_db.execute("PRAGMA page_count").fetchone()[0]
    loop_db.execute(f"PRAGMA max_page_count={pages + 2}")
    big, small = delivery(element_id=1, edit_link="x" * 200_000), delivery(element_id=2)
    results = await asyncio.gather(store.record(big), store.record(small), return_exceptions=True)
    # SQLite rolled the transaction back itself on SQLITE_FULL. Before, the batch's own ROLLBACK then failed, and
    # both writes failed with "cannot rollback - no transaction is active" instead of running again alone.
    assert isinstance(results[0], StateUnavailable) and "database or disk is full" in str(results[0])
    assert results[1] is True
    assert [d.element_id for d in await store.all_deliveries()] == [2]


def test_a_transaction_sqlite_rolled_back_itself_raises_its_own_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        db.execute("CREATE TABLE t (x)")
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0] + 1}")
        # Before: "cannot rollback - no transaction is active", the context's ROLLBACK failing in its place.
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"), _transaction(db):
            db.execute("INSERT INTO t VALUES (zeroblob(100000))")
        assert not db.in_transaction
    finally:
        db.close()


async def test_after_a_failed_sync_of_the_wal_a_flush_passes_only_once_a_checkpoint_wrote_its_commits_again(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    assert await store.record(delivery())
    failures = [OSError(5, "Input/output error")]
    real_fsync = os.fdatasync

    def fsync(descriptor: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(descriptor)

    monkeypatch.setattr("bridge.state.sqlite.os.fdatasync", fsync)
    await store.flush()  # asks for the sync, which fails on the store's thread
    await eventually(lambda: store._sync_failed, what="the sync failed")
    # Linux reports a failed writeback once and marks the pages clean: the next fsync passes with the commits still
    # not on disk. Before, that fsync was taken for durable; now the commits are checkpointed into the database
    # file (which SQLite syncs) and the WAL emptied.
    await store.flush()
    assert os.path.getsize(f"{store.path}-wal") == 0
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1
    await store.flush()  # and from then on, as before


# ---- a full disk past a checkpoint, and checkpoints held back --------------------------------------------------


async def _record_new_deliveries(store: SqliteStateStore, first: int, count: int, *, link: int = 500) -> int:
    """Record deliveries of elements ``first``… (with a link of ``link`` bytes), 20 to a group commit, until
    ``count`` were acknowledged or a group had one fail; how many were acknowledged."""
    acknowledged = 0
    for start in range(first, first + count, 20):
        writes = [store.record(delivery(element_id=n, edit_link="x" * link)) for n in range(start, start + 20)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        acknowledged += sum(result is True for result in results)
        if any(isinstance(result, StateUnavailable) for result in results):
            break
        await asyncio.sleep(0.001)  # a worker waits on the network between writes; the thread runs then
    return acknowledged


async def _thread_idle(store: SqliteStateStore) -> None:
    """Wait until what the store handed its thread (a checkpoint) has run: the thread runs its work in order."""
    await store._on_thread(lambda: None)


def _rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])


async def test_a_full_disk_that_fails_a_checkpoint_refuses_writes_and_once_freed_the_probe_empties_the_wal(
    tmp_path: Path,
) -> None:
    # The disk fills right after a checkpoint: the next writes reuse the WAL's space and are acknowledged, but the
    # next checkpoint needs the database file to grow, and fails; then the WAL cannot grow either.
    with small_filesystem(tmp_path / "state", "32m") as disk:
        store = SqliteStateStore(disk / "state.db")
        await store.open()
        try:
            written = await _record_new_deliveries(store, 1, CHECKPOINT_EVERY_WRITES)
            await _thread_idle(store)
            filler = fill(disk)
            with capture_logs() as lines:
                # Smaller rows than before the checkpoint: fewer pages to a commit, so that the WAL's space holds
                # the writes up to the next checkpoint.
                written += await _record_new_deliveries(store, written + 1, 2 * CHECKPOINT_EVERY_WRITES, link=100)
                await _thread_idle(store)
            failed = [line for line in lines if line["event"] == "wal_checkpoint_failed"]
            # The checkpoint failed, and then a write (the WAL could not grow): the worker would pause on its probe.
            assert 2 * CHECKPOINT_EVERY_WRITES < written < 3 * CHECKPOINT_EVERY_WRITES and len(failed) == 1, written
            assert "database or disk is full" in failed[0]["error"]
            with pytest.raises(StateUnavailable, match="database or disk is full"):
                await store.probe()
            # Every write acknowledged is in the file.
            assert _rows(disk / "state.db") == written
            filler.unlink()
            # The probe passes, and the checkpoint the full disk failed is made: the WAL gives its space back.
            await store.probe()
            assert os.path.getsize(f"{store.path}-wal") == 0
            assert _rows(disk / "state.db") == written
            assert await _record_new_deliveries(store, written + 1, 20) == 20
        finally:
            await store.close()


async def test_a_full_disk_that_fails_the_checkpoint_a_probe_makes_keeps_the_worker_paused(tmp_path: Path) -> None:
    # Room for the probe's writes in the WAL, none for the database file to take the WAL's pages: the probe fails
    # (the worker stays paused) rather than let messages fill the WAL up to the disk's end again.
    with small_filesystem(tmp_path / "state", "32m") as disk:
        store = SqliteStateStore(disk / "state.db")
        await store.open()
        try:
            written = await _record_new_deliveries(store, 1, CHECKPOINT_EVERY_WRITES)
            await _thread_idle(store)
            filler = fill(disk)
            written += await _record_new_deliveries(store, written + 1, 2 * CHECKPOINT_EVERY_WRITES, link=100)
            await _thread_idle(store)
            filler.unlink()
            # Room for the probe's frames in the WAL (its row written, then zeroed where SQLite deletes securely)
            # and 64 KiB more, not for the database file to grow by the probe's pages as well.
            with sqlite3.connect(disk / "state.db") as db:
                page_size, secure = (
                    db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "secure_delete")
                )
            frames = (PROBE_ROOM_BYTES // page_size + 8) * (2 if secure else 1)
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            with (disk / ".filler").open("wb") as handle:
                handle.write(b"\0" * (free - frames * (page_size + 24) - 64 * 1024))
            with pytest.raises(StateUnavailable, match="database or disk is full"):
                await store.probe()
            (disk / ".filler").unlink()
            await store.probe()
            assert os.path.getsize(f"{store.path}-wal") == 0
            assert _rows(disk / "state.db") == written
        finally:
            await store.close()


async def test_a_checkpoint_a_reader_holds_back_is_logged_and_the_next_after_it_let_go_empties_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program reading the file in a transaction left open (a sqlite3 shell): no checkpoint can reset the WAL
    # past its snapshot, and the WAL grows with every commit for as long as it reads. Before, nothing said so.
    monkeypatch.setattr("bridge.state.sqlite.BUSY_TIMEOUT_MS", 100)  # the checkpoint waits 0.1 s for it, not 5
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    reader = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM elements").fetchone()
        with capture_logs() as lines:
            written = await _record_new_deliveries(store, 1, 2 * CHECKPOINT_EVERY_WRITES)
            await _thread_idle(store)
        held_back = [line for line in lines if line["event"] == "wal_checkpoint_failed"]
        assert len(held_back) == 2, lines
        assert "another connection is reading or writing the file" in held_back[0]["error"]
        grown = os.path.getsize(f"{store.path}-wal")
        reader.execute("COMMIT")
        written += await _record_new_deliveries(store, written + 1, CHECKPOINT_EVERY_WRITES)
        await _thread_idle(store)
        # The checkpoint after the reader let go resets the WAL and gives back the space it grew by meanwhile.
        assert grown > 0 and os.path.getsize(f"{store.path}-wal") == 0
        assert _rows(tmp_path / "state.db") == written
    finally:
        reader.close()
        await store.close()


async def test_a_full_disk_at_open_is_the_store_unavailable_even_with_a_wal_left_behind(tmp_path: Path) -> None:
    # A worker stopped on a full disk leaves its WAL (the checkpoint of its close needed room) and the WAL's index:
    # a new one opening the file needs no new space to read it, and opened (then paused at its first message) where
    # the start promises to stop (exit 75).
    with small_filesystem(tmp_path / "state", "32m") as disk:
        store = SqliteStateStore(disk / "state.db")
        await store.open()
        written = await _record_new_deliveries(store, 1, CHECKPOINT_EVERY_WRITES // 2)
        filler = fill(disk)
        await store.close()
        assert os.path.getsize(disk / "state.db-wal") > 0
        again = SqliteStateStore(disk / "state.db")
        with pytest.raises(
            StateUnavailable, match=r"state\.db: the disk holding it is full \(database or disk is full\)"
        ):
            await again.open()
        filler.unlink()
        await again.open()
        await again.close()
        assert _rows(disk / "state.db") == written
