"""SQLite state store: one file, WAL journal, a versioned schema, off the event loop via aiosqlite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.errors import ConfigError
from bridge.state.base import Delivery, ElementBusy, ElementMark

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
        self._db: aiosqlite.Connection | None = None
        self._owner = uuid.uuid4().hex
        self._lease_seconds = lease_seconds
        self._lease_wait = lease_wait_seconds
        # One connection per process: transactions from concurrent coroutines must not interleave on it.
        self._write = asyncio.Lock()

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, aiosqlite.Error) as error:
            raise ConfigError("state.url", f"cannot open SQLite database {self.path}: {error}") from None
        # WAL lets readers (e.g. `kordiam-bridge status`) run beside the worker; the timeout covers a second
        # process writing at the same moment.
        try:
            # The timeout first: switching a new file to WAL takes a lock that another worker may hold right now,
            # and that switch does not wait on the busy timeout, so it is retried briefly.
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._switch_to_wal()
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _switch_to_wal(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except aiosqlite.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        # One immediate transaction, so two workers starting at once cannot both apply a migration.
        async with self._transaction() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            async with db.execute("SELECT MAX(version) FROM schema_version") as cursor:
                row = await cursor.fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    "state.url",
                    f"{self.path} has schema version {current}, newer than this bridge ({SCHEMA_VERSION})",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("state store is not open")
        return self._db

    async def deliveries(self, element_id: int) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE element_id = ? ORDER BY channel, publication_id"
        async with self._conn.execute(query, (element_id,)) as cursor:
            return [_delivery(row) for row in await cursor.fetchall()]

    async def all_deliveries(self) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY element_id, channel, publication_id"
        async with self._conn.execute(query) as cursor:
            return [_delivery(row) for row in await cursor.fetchall()]

    async def record(self, delivery: Delivery) -> bool:
        # One atomic statement (one hop to the database thread): the update only happens when the stored version
        # is not newer (the same order as `is_older`: the date first, the version when the dates are equal or
        # missing). Dates are fixed-width UTC text, so comparing the text compares the times.
        async with self._write:
            cursor = await self._conn.execute(
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
                "      AND excluded.version < deliveries.version))",
                (
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
                ),
            )
            return cursor.rowcount == 1

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
            async with self._write:
                await self._conn.execute(
                    "DELETE FROM leases WHERE element_id = ? AND owner = ?", (element_id, self._owner)
                )

    async def _try_lease(self, element_id: int) -> bool:
        now = time.time()
        async with self._write:
            cursor = await self._conn.execute(
                "INSERT INTO leases (element_id, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (element_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE leases.expires_at < ? OR leases.owner = ?",
                (element_id, self._owner, now + self._lease_seconds, now, self._owner),
            )
            return cursor.rowcount == 1

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write:
            db = self._conn
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        async with self._write:
            await self._conn.execute(
                "DELETE FROM deliveries WHERE element_id = ? AND channel = ? AND publication_id = ?",
                (element_id, channel, publication_id),
            )

    async def element_mark(self, element_id: int) -> ElementMark | None:
        query = "SELECT element_id, modification_date, version, deleted FROM elements WHERE element_id = ?"
        async with self._conn.execute(query, (element_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return ElementMark(row[0], _parse(row[1]), row[2], bool(row[3]))

    async def mark_element(self, mark: ElementMark) -> None:
        async with self._write:
            await self._conn.execute(
                "INSERT INTO elements (element_id, modification_date, version, deleted, updated_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (element_id) DO UPDATE SET "
                "modification_date=excluded.modification_date, version=excluded.version, "
                "deleted=excluded.deleted, updated_at=excluded.updated_at",
                (mark.element_id, _iso(mark.modification_date), mark.version, int(mark.deleted), _now()),
            )


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
