"""SQLite state store: one file, WAL journal, a versioned schema, off the event loop on one thread of its own.

Every operation is one call on that thread (its statements and any fetch together), and the calls of one turn of
the event loop travel together: a hop between the loop and a thread costs more than these statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bridge.errors import ConfigError
from bridge.state.base import Delivery, ElementBusy, ElementMark

T = TypeVar("T")
log = structlog.get_logger("bridge.state")

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE deliveries (
        element_id        INTEGER NOT NULL,
        channel           TEXT    NOT NULL,
        publication_id    INTEGER NOT NULL,
        external_id       TEXT    NOT NULL,
        fingerprint       TEXT    NOT NULL,
        edit_link         TEXT,
        open_link         TEXT,
        live              INTEGER NOT NULL DEFAULT 0,
        edit_link_title   TEXT,
        open_link_title   TEXT,
        modification_date TEXT,
        version           INTEGER,
        updated_at        TEXT    NOT NULL,
        PRIMARY KEY (element_id, channel, publication_id)
    );
    CREATE TABLE elements (
        element_id        INTEGER PRIMARY KEY,
        modification_date TEXT,
        version           INTEGER,
        deleted           INTEGER NOT NULL DEFAULT 0,
        updated_at        TEXT    NOT NULL
    );
    """,
    2: """
    CREATE TABLE leases (
        element_id INTEGER PRIMARY KEY,
        owner      TEXT    NOT NULL,
        expires_at REAL    NOT NULL
    );
    """,
}
DELIVERY_COLUMNS = (
    "element_id, channel, publication_id, external_id, fingerprint, edit_link, open_link, live, "
    "edit_link_title, open_link_title, modification_date, version"
)


class SqliteStateStore:
    """Several worker processes on one host may share the file: leases and writes are transactions."""

    def __init__(self, path: str | Path, *, lease_seconds: float = 120.0, lease_wait_seconds: float = 10.0) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._thread: _DatabaseThread | None = None
        self._owner = uuid.uuid4().hex
        self._lease_seconds = lease_seconds
        self._lease_wait = lease_wait_seconds

    async def open(self) -> None:
        self._thread = _DatabaseThread("state-sqlite")
        try:
            self._db = await self._call(self._connect)
            await self._run(self._migrate)
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError("state.url", f"cannot open SQLite database {self.path}: {error}") from None
        try:
            # WAL lets readers (e.g. `kordiam-bridge status`) run beside the worker; the timeout covers a second
            # process writing at the same moment. The timeout first: switching a new file to WAL takes a lock that
            # another worker may hold right now, and that switch does not wait on the busy timeout.
            db.execute("PRAGMA busy_timeout=5000")
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        thread, db = self._thread, self._db
        self._thread, self._db = None, None
        if thread is None:
            return
        if db is not None:
            await thread.call(db.close)
        thread.stop()

    async def _call(self, operation: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("state store is not open")
        return await self._thread.call(operation)

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` with the connection, on the store's thread."""
        db = self._db
        if db is None:
            raise RuntimeError("state store is not open")
        return await self._call(lambda: operation(db))

    def _migrate(self, db: sqlite3.Connection) -> None:
        # One immediate transaction, so two workers starting at once cannot both apply a migration.
        with _transaction(db):
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    "state.url",
                    f"{self.path} has schema version {current}, newer than this bridge ({SCHEMA_VERSION})",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    async def deliveries(self, element_id: int) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE element_id = ? ORDER BY channel, publication_id"
        rows = await self._run(lambda db: db.execute(query, (element_id,)).fetchall())
        return [_delivery(row) for row in rows]

    async def all_deliveries(self) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY element_id, channel, publication_id"
        rows = await self._run(lambda db: db.execute(query).fetchall())
        return [_delivery(row) for row in rows]

    async def record(self, delivery: Delivery) -> bool:
        # One atomic statement: the update only happens when the stored version is not newer (the same order as
        # `is_older`: the date first, the version when the dates are equal or missing). Dates are fixed-width UTC
        # text, so comparing the text compares the times.
        values = (
            delivery.element_id,
            delivery.channel,
            delivery.publication_id,
            delivery.external_id,
            delivery.fingerprint,
            delivery.edit_link,
            delivery.open_link,
            int(delivery.live),
            delivery.edit_link_title,
            delivery.open_link_title,
            _iso(delivery.modification_date),
            delivery.version,
            _now(),
        )
        return await self._run(lambda db: db.execute(RECORD, values).rowcount == 1)

    @asynccontextmanager
    async def lease(self, element_id: int) -> AsyncIterator[None]:
        deadline = time.monotonic() + self._lease_wait
        delay = 0.05
        while not await self._try_lease(element_id):
            if time.monotonic() + delay > deadline:
                raise ElementBusy(f"element {element_id} is being processed by another worker")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        try:
            yield
        finally:
            self._release_soon(element_id)

    def _release_soon(self, element_id: int) -> None:
        """Give the lease back without waiting for it.

        The store's thread runs calls in order, so the release follows this sync's writes; the message need not
        wait for one more round trip. Should it fail, the lease lapses after ``lease_seconds``.
        """
        thread, db, owner = self._thread, self._db, self._owner
        if thread is None or db is None:
            return
        release = thread.call(
            lambda: db.execute("DELETE FROM leases WHERE element_id = ? AND owner = ?", (element_id, owner))
        )
        release.add_done_callback(functools.partial(_log_failed_release, element_id))

    async def _try_lease(self, element_id: int) -> bool:
        now = time.time()
        values = (element_id, self._owner, now + self._lease_seconds, now, self._owner)
        return await self._run(lambda db: db.execute(TRY_LEASE, values).rowcount == 1)

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        await self._run(
            lambda db: db.execute(
                "DELETE FROM deliveries WHERE element_id = ? AND channel = ? AND publication_id = ?",
                (element_id, channel, publication_id),
            )
        )

    async def element_mark(self, element_id: int) -> ElementMark | None:
        query = "SELECT element_id, modification_date, version, deleted FROM elements WHERE element_id = ?"
        row = await self._run(lambda db: db.execute(query, (element_id,)).fetchone())
        if row is None:
            return None
        return ElementMark(row[0], _parse(row[1]), row[2], bool(row[3]))

    async def mark_element(self, mark: ElementMark) -> None:
        values = (mark.element_id, _iso(mark.modification_date), mark.version, int(mark.deleted), _now())
        await self._run(lambda db: db.execute(MARK_ELEMENT, values))


class _DatabaseThread:
    """One thread that owns the connection and runs the event loop's calls on it, in batches.

    The calls submitted during one turn of the event loop travel to the thread together, and their results come
    back together: a busy worker pays one wake-up each way per batch, not per call (a thread hop costs more than
    these statements). Calls run one after another, so concurrent coroutines never interleave on the connection.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[list[_Call] | None] = queue.SimpleQueue()
        self._pending: list[_Call] = []
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, operation: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._send)
        self._pending.append((operation, future))
        return future

    def stop(self) -> None:
        """End the thread once everything submitted so far has run."""
        self._send()
        self._inbox.put(None)

    def _send(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._inbox.put(batch)

    def _serve(self) -> None:
        while (batch := self._inbox.get()) is not None:
            outcomes: list[tuple[asyncio.Future[Any], Any, Exception | None]] = []
            for operation, future in batch:
                try:
                    outcomes.append((future, operation(), None))
                except Exception as error:
                    outcomes.append((future, None, error))
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(_settle, outcomes)


def _log_failed_release(element_id: int, release: asyncio.Future[Any]) -> None:
    if not release.cancelled() and (error := release.exception()) is not None:
        log.warning(
            "lease_release_failed",
            element_id=element_id,
            error=f"{type(error).__name__}: {error}",
            hint="the lease lapses after state.lease_seconds",
        )


_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, Exception | None]]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


RECORD = (
    f"INSERT INTO deliveries ({DELIVERY_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (element_id, channel, publication_id) DO UPDATE SET "
    "external_id=excluded.external_id, fingerprint=excluded.fingerprint, edit_link=excluded.edit_link, "
    "open_link=excluded.open_link, live=excluded.live, edit_link_title=excluded.edit_link_title, "
    "open_link_title=excluded.open_link_title, modification_date=excluded.modification_date, "
    "version=excluded.version, updated_at=excluded.updated_at "
    "WHERE NOT ("
    "  (excluded.modification_date IS NOT NULL AND deliveries.modification_date IS NOT NULL"
    "   AND excluded.modification_date < deliveries.modification_date)"
    "  OR ((excluded.modification_date IS NULL OR deliveries.modification_date IS NULL"
    "       OR excluded.modification_date = deliveries.modification_date)"
    "      AND excluded.version IS NOT NULL AND deliveries.version IS NOT NULL"
    "      AND excluded.version < deliveries.version))"
)
TRY_LEASE = (
    "INSERT INTO leases (element_id, owner, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (element_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE leases.expires_at < ? OR leases.owner = ?"
)
MARK_ELEMENT = (
    "INSERT INTO elements (element_id, modification_date, version, deleted, updated_at) "
    "VALUES (?,?,?,?,?) ON CONFLICT (element_id) DO UPDATE SET "
    "modification_date=excluded.modification_date, version=excluded.version, "
    "deleted=excluded.deleted, updated_at=excluded.updated_at"
)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error (the connection is in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _delivery(row: Any) -> Delivery:
    return Delivery(
        element_id=row[0],
        channel=row[1],
        publication_id=row[2],
        external_id=row[3],
        fingerprint=row[4],
        edit_link=row[5],
        open_link=row[6],
        live=bool(row[7]),
        edit_link_title=row[8],
        open_link_title=row[9],
        modification_date=_parse(row[10]),
        version=row[11],
    )


def _iso(value: datetime | None) -> str | None:
    """Fixed-width UTC text (``2026-01-02T03:04:05.000000Z``): ordering the text orders the times."""
    if value is None:
        return None
    moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _now() -> str:
    return datetime.now(UTC).isoformat()
