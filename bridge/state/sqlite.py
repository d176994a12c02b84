"""SQLite state store: one file, WAL journal, a versioned schema.

Per-element operations run on the event loop itself, on a connection that never waits: each is one indexed
statement of some 10–50 µs, and in WAL mode with ``synchronous=NORMAL`` a commit appends to the WAL without an
fsync. What could block is moved off the loop: a statement that finds the database locked by another process
(``busy_timeout`` is 0 on that connection) is retried on a second connection on a thread of the store's own,
which waits up to 5 s; checkpoints (they fsync), the WAL's sync every ``WAL_SYNC_SECONDS`` (``flush``) and
whole-table reads run on that thread too. Handing every statement to a thread cost 2–6 ms of latency per hop
under load, three hops per message (measured).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import structlog

from bridge.errors import ConfigError
from bridge.ops.clock import utc_now_iso, utc_text
from bridge.state.base import (
    ChannelCounts,
    Delivery,
    DeliveryCounts,
    ElementMark,
    ElementRecord,
    HeldLease,
    LeaseRecord,
    Parked,
    RecordedDelivery,
    StateUnavailable,
    new_generation,
)
from bridge.state.leases import LeaseKeeper, LeaseOwner, held_lease, try_sweep_lease

T = TypeVar("T")
# Writes waiting for one group commit, each with the future its caller waits on.
Batch = list[tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]]
log = structlog.get_logger("bridge.state")
# Checkpoint the WAL (on the thread) after this many writes on the loop's connection, whose automatic
# checkpoints are off. Each commit appends every page it changed, so this bounds the WAL (about 15 MB at most in
# `make bench`, 3 writes per message); fewer checkpoints mean fewer loop writes that meet one, find the file
# locked and wait for it on the thread. RESTART or TRUNCATE, not PASSIVE: under steady writes a passive checkpoint
# never catches up, and the WAL would grow without end (``_checkpoint``).
CHECKPOINT_EVERY_WRITES = 2000
# The longest a commit waits in the page cache for the WAL's fdatasync (``flush``). A host crash, or the kernel
# remounting the disk read-only after an I/O error, loses the commits not yet synced; the kernel's own writeback
# would leave up to 30 s of them. Not before each acknowledgement: a sync a message, on the store's thread, cost
# the worker about a sixth more CPU a message at 32 in flight (`make bench`, four paired runs), and its window
# would not close either (a crash between a channel's write and its record's sync repeats the write all the same).
WAL_SYNC_SECONDS = 0.1
BUSY_TIMEOUT_MS = 5000

SCHEMA_VERSION = 8
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
    # When the fetch behind the element's mark started (covered notifications, across workers).
    3: """
    ALTER TABLE elements ADD COLUMN fetched_at REAL;
    """,
    # The ingress maps the id in a Kordiam DELETE back to its element: a CMS id (deliveries_with_external_id) or
    # the Kordiam publication id it answered itself (deliveries_of_publication).
    4: """
    CREATE INDEX deliveries_by_external_id ON deliveries (external_id);
    CREATE INDEX deliveries_by_publication_id ON deliveries (publication_id);
    """,
    # An element's lease moves into its row: taking it also reads the mark, and the release records the mark in
    # the same statement (per message two statements and a page of the WAL fewer). ``updated_at`` is NULL while
    # a row holds a lease and no mark. Rebuilt, as SQLite cannot drop a NOT NULL constraint in place; a worker of
    # an earlier version still running on the file fails on the missing ``leases`` table (and retries its
    # messages) rather than take leases nobody else sees.
    5: """
    CREATE TABLE elements_v5 (
        element_id        INTEGER PRIMARY KEY,
        modification_date TEXT,
        version           INTEGER,
        deleted           INTEGER NOT NULL DEFAULT 0,
        fetched_at        REAL,
        updated_at        TEXT,
        lease_owner       TEXT,
        lease_expires_at  REAL
    );
    INSERT INTO elements_v5 (element_id, modification_date, version, deleted, fetched_at, updated_at)
        SELECT element_id, modification_date, version, deleted, fetched_at, updated_at FROM elements;
    INSERT INTO elements_v5 (element_id, lease_owner, lease_expires_at)
        SELECT element_id, owner, expires_at FROM leases WHERE true
        ON CONFLICT (element_id) DO UPDATE SET
            lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at;
    DROP TABLE leases;
    DROP TABLE elements;
    ALTER TABLE elements_v5 RENAME TO elements;
    """,
    # The elements a channel owes a sync while it refuses the bridge's own credentials (``park``). A table of its
    # own, keyed by channel first so that a channel's items are one range of the key in element order; the
    # worker's path (lease, record, release) never touches it. A worker of version 5 still running on the file
    # does not read it, and loses nothing by it.
    6: """
    CREATE TABLE parked (
        channel    TEXT    NOT NULL,
        element_id INTEGER NOT NULL,
        reason     TEXT    NOT NULL,
        since      TEXT    NOT NULL,
        generation INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (channel, element_id)
    ) WITHOUT ROWID;
    """,
    # The token of an element whose channels may hold an older version than its deliveries say (``resync``): set
    # by a release that finds its lease lost, cleared by the mark of the re-sync that read it. A worker of version
    # 6 still running on the file neither reads nor writes it (its releases leave it as it is).
    7: """
    ALTER TABLE elements ADD COLUMN resync TEXT;
    """,
    # A background sweep's cursor (fixed-width UTC text, where its next run resumes) and lease (which worker runs
    # it): the reconciliation sweep's place survives a restart, and one worker at a time sweeps. A worker of
    # version 7 still running on the file sweeps on its own, as it did.
    8: """
    CREATE TABLE sweeps (
        name             TEXT PRIMARY KEY,
        cursor           TEXT,
        lease_owner      TEXT,
        lease_expires_at REAL
    ) WITHOUT ROWID;
    """,
}
# Tables every schema version of the bridge has had: version 1 made them in the transaction that made
# schema_version, so the bridge's file never holds one without the others.
OWN_TABLES = ("schema_version", "deliveries", "elements")
DELIVERY_COLUMNS = (
    "element_id, channel, publication_id, external_id, fingerprint, edit_link, open_link, live, "
    "edit_link_title, open_link_title, modification_date, version"
)


class SqliteStateStore:
    """Several worker processes on one host may share the file: leases and writes are transactions."""

    reads_in_process = True

    def __init__(
        self,
        path: str | Path,
        *,
        lease_seconds: float = 120.0,
        lease_wait_seconds: float = 10.0,
        keep_leases: bool = True,
        owner: LeaseOwner | None = None,
        create_directories: bool = False,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        # read_only: for operator commands (`status`), which must change nothing in a file workers share: no
        # journal mode, no migration (a newer CLI must not migrate a file older workers still use), no leases.
        self._read_only = read_only
        # A typo in state.url must not start a fresh, empty store somewhere: its directory must exist, unless
        # the configuration asks for it to be made (state.create_directories).
        self._create_directories = create_directories
        self._loop_db: sqlite3.Connection | None = None  # used on the event loop only; never waits
        self._thread_db: sqlite3.Connection | None = None  # used on the store's thread only; waits for locks
        self._thread: ThreadPoolExecutor | None = None
        self._writes = 0
        # Writes waiting for the next group commit, with the futures their callers wait on (``_write``).
        self._queued: Batch = []
        # The WAL's sync (``_sync_now``) running on the thread, and the next one, which the callers asking meanwhile
        # share.
        self._sync_running: asyncio.Future[None] | None = None
        self._sync_next: asyncio.Future[None] | None = None
        # A sync of the WAL failed, and no checkpoint has written its commits again since (on the thread only).
        self._wal_in_doubt = False
        # The last checkpoint did not finish, so the WAL grew past its usual size meanwhile (on the thread only).
        self._checkpoint_owed = False
        # The task that syncs the WAL WAL_SYNC_SECONDS after a ``flush`` (until no commit came during a sync), and
        # whether the last sync failed.
        self._syncing_soon: asyncio.Task[None] | None = None
        self._sync_failed = False
        self._owner = (owner or LeaseOwner.of_process(os.getpid())).encode()
        # Counts the releases that found their lease lost: with the owner, the re-sync token each sets.
        self._releases = itertools.count()
        self._lease_seconds = lease_seconds
        self._lease_wait = lease_wait_seconds
        # keep_leases=False: a worker that never extends its leases (tests of expiry stand in a hung worker so);
        # owner: tests stand in another process's store so.
        self._keeper = LeaseKeeper(lease_seconds, self._extend_leases, enabled=keep_leases)

    async def open(self) -> None:
        if self.path.is_dir():  # SQLite's own words for it differ by mode ("unable to open", "disk I/O error")
            raise ConfigError(
                "state.url", f"{self.path} is a directory; name a file in it, e.g. {self.path / 'state.db'}"
            )
        if self.path.exists() and not self.path.is_file():  # SQLite would wait for ever on a named pipe
            raise ConfigError(
                "state.url",
                f"{self.path} is not a regular file (a pipe, a device or a socket); name a file for the database",
            )
        # A WAL left behind (by a worker stopped on a full disk, which could not checkpoint it at its close, or by
        # one still running) is read where it lies, with its index: opening writes nothing then, and finds no full
        # disk, where a new file's pages or a new index (32 KiB) would not fit.
        wal_left = _size(Path(f"{self.path}-wal")) > 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        try:
            if self._read_only:
                self._thread_db = await self._on_thread(self._connect_read_only)
                return
            self._thread_db = await self._on_thread(lambda: self._connect(busy_timeout_ms=BUSY_TIMEOUT_MS))
            await self._on_thread(lambda: self._migrate(self._require(self._thread_db)))
            if wal_left:
                await self._on_thread(self._check_room)
            self._loop_db = await self._on_thread(lambda: self._connect(busy_timeout_ms=0))
        except sqlite3.OperationalError as error:
            await self.close()
            if _locked(error):
                # Nothing in the settings to fix: the same start works once the other program lets go.
                raise StateUnavailable(
                    f"SQLite {self.path} is locked by another program (a sqlite3 shell left in a transaction, a "
                    f"backup) for longer than the busy timeout: {error}"
                ) from None
            if self._disk_full(error):
                # Nothing in the settings either: the same start works once there is room.
                raise StateUnavailable(f"SQLite {self.path}: the disk holding it is full ({error})") from None
            # A read-only file system, a directory the worker may not write: one line naming the file.
            raise ConfigError("state.url", f"cannot open SQLite database {self.path}: {error}") from None
        except BaseException:
            await self.close()
            raise
        self._keeper.start()

    def _connect(self, *, busy_timeout_ms: int) -> sqlite3.Connection:
        if not self._create_directories and not self.path.parent.is_dir():
            raise ConfigError(
                "state.url",
                f"directory {self.path.parent} does not exist (create it, or set state.create_directories = true)",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file where a directory goes, a read-only or full file system
            raise ConfigError(
                "state.url", f"cannot make the directory {self.path.parent}: {error.strerror or error}"
            ) from None
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError("state.url", f"cannot open SQLite database {self.path}: {error}") from None
        try:
            # WAL lets readers (e.g. `kordiam-bridge status`) run beside the worker. Switching a new file to WAL
            # takes a lock that another worker may hold right now and does not wait on the busy timeout, so it
            # is retried briefly here.
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._refuse_foreign(db)
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
            db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            if busy_timeout_ms == 0:
                db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints fsync: the thread runs them
        except BaseException as error:
            db.close()
            if (not_sqlite := self._not_sqlite(error)) is not None:
                raise not_sqlite from None
            raise
        return db

    def _check_room(self) -> None:
        """Room for the writes of messages, as the probe checks it (on the store's thread), at an open that wrote
        nothing: a worker started on a full disk would only pause at its first message, where the start promises
        to stop (exit 75)."""
        db = self._require(self._thread_db)
        try:
            _take_room(db)
            _give_room_back(db)
        except sqlite3.DatabaseError as error:
            # Only a full disk or a lock stops the start here; other trouble (a damaged page) the worker meets at
            # its messages, as it did before this check.
            if isinstance(error, sqlite3.OperationalError) and (_locked(error) or self._disk_full(error)):
                raise

    def _disk_full(self, error: sqlite3.OperationalError) -> bool:
        """SQLITE_FULL, or an I/O error on a disk without a free block: an existing file's shared-memory index
        that cannot grow is SQLITE_IOERR_SHMSIZE, "disk I/O error"."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return True
        if code != sqlite3.SQLITE_IOERR:
            return False
        try:
            return os.statvfs(self.path.parent).f_bavail == 0
        except OSError:
            return False

    def _not_sqlite(self, error: BaseException) -> ConfigError | None:
        """SQLITE_NOTADB and the like (``state.url`` names some other file) as one line naming it; None for the
        rest (a lock, a full or read-only disk: ``open`` words those, naming the file)."""
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            return ConfigError("state.url", f"{self.path} is not a SQLite database: {error}")
        return None

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that cannot write (whole-table reads only), to a file of this bridge's schema version."""
        try:
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise ConfigError("state.url", f"cannot open SQLite database {self.path}: {error}") from None
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._refuse_foreign(db)
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                raise ConfigError("state.url", f"{self.path} is empty: no worker has opened it yet")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current != SCHEMA_VERSION:
                raise ConfigError(
                    "state.url",
                    f"{self.path} has schema version {current}, this bridge reads version {SCHEMA_VERSION} (a worker "
                    "of this version migrates it when it starts)",
                )
        except BaseException as error:
            db.close()
            if (not_sqlite := self._not_sqlite(error)) is not None:
                raise not_sqlite from None
            raise
        return db

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """Refuse another application's database before anything in it changes (its journal mode included).

        A new or empty file is the bridge's to initialise, and a file of the bridge's holds its tables (any schema
        version; ``_migrate`` brings an older one up to date). A file with tables but not the bridge's is someone
        else's: creating the bridge's tables inside it would leave two applications writing one file, so it is
        refused naming ``state.url``.
        """
        names = [
            str(row[0])
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
            )
        ]
        if not names or all(table in names for table in OWN_TABLES):
            return
        if "schema_version" in names:
            try:
                row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except sqlite3.OperationalError:
                row = None  # a schema_version of another shape: someone else's
            if row and isinstance(row[0], int) and row[0] > SCHEMA_VERSION:
                return  # a newer bridge's (its tables may differ): _migrate names it as newer
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ConfigError(
            "state.url",
            f"{self.path} is another application's SQLite database (tables: {shown}), not a kordiam-bridge state "
            "database; point state.url at a file of its own",
        )

    async def close(self) -> None:
        await self._keeper.stop()
        if self._syncing_soon is not None:
            self._syncing_soon.cancel()  # closing the connections below syncs what they wrote
            await asyncio.gather(self._syncing_soon, return_exceptions=True)
        if self._queued:
            self._commit_queued()  # what callers still wait for is committed, not dropped
        thread, loop_db, thread_db = self._thread, self._loop_db, self._thread_db
        self._thread, self._loop_db, self._thread_db = None, None, None
        if loop_db is not None:
            loop_db.close()  # not the last connection: no checkpoint on close
        if thread is None:
            return
        if thread_db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, thread_db.close)
        thread.shutdown(wait=False)

    @staticmethod
    def _require(db: sqlite3.Connection | None) -> sqlite3.Connection:
        if db is None:
            raise RuntimeError("state store is not open")
        return db

    async def _on_thread(self, operation: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("state store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, operation)

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run one read on the loop's connection, or on the thread if the file is locked."""
        try:
            return operation(self._require(self._loop_db))
        except sqlite3.DatabaseError as error:
            if not _locked(error):
                self._reraise(error)
        # Another process holds the lock: not reported, but the read waits for it on the thread.
        return await self._read_on_thread(operation)

    def _reraise(self, error: sqlite3.DatabaseError) -> NoReturn:
        """Raise a SQLite error that a statement of the store's met as the store reports it: the file's trouble as
        ``StateUnavailable`` naming the file, a statement's own error as it is. Called in the ``except`` only, so
        a statement that succeeds pays nothing for it (a ``with`` block around each cost 5 µs per message in
        ``bench.state_statements``, measured).

        The file's trouble: an OperationalError (locked past the busy timeout, disk full or read-only, I/O), or a
        bare DatabaseError ("database disk image is malformed", "file is not a database": the file was damaged or
        replaced under the worker). That is not the message's fault, so it is reported as the state store's (stage
        `state`: the worker pauses if it lasts), as DynamoDB's is, not as a crash of the handler (which would
        dead-letter every message in turn). A statement's own error (a constraint, a programming error) is the
        bridge's bug.
        """
        if isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError:
            raise StateUnavailable(f"SQLite {self.path}: {error}") from error
        raise error

    async def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run one write in the next group commit, and return its result once that committed;
        ``StateUnavailable`` if SQLite could not run it (the file locked past the busy timeout, the disk full).

        Each commit costs far more than the statements in it (16-24 µs: the WAL append and the lock round, measured),
        so the writes queued while the event loop runs one pass of its ready callbacks share one transaction. A
        write is committed before its caller goes on, as with a transaction of its own; a caller cancelled before
        the commit started has its write left out. A write with nothing ready to run beside it (no other callback
        in this pass or queued for the next) could share its commit with none, so it is committed at once.
        """
        loop = asyncio.get_running_loop()
        if not self._queued and not _others_ready(loop):
            # Nothing else runs before the commit would, so no write could join it: commit now, and spare the
            # two passes of the loop a queued write takes (its commit, then its caller's wake-up). Measured in
            # `bench.state_statements --cold`: a sixth of the store's CPU per message.
            try:
                result: T = operation(self._require(self._loop_db))
            except sqlite3.DatabaseError as error:
                if not _locked(error):
                    self._reraise(error)
                # Another process holds the write lock: not reported, but queued below, where the write waits for
                # it on the thread.
            else:
                self._wrote(1)
                return result
        done: asyncio.Future[Any] = loop.create_future()
        self._queued.append((operation, done))
        if len(self._queued) == 1:
            loop.call_soon(self._commit_queued)
        try:
            queued: T = await done
        except sqlite3.DatabaseError as error:
            self._reraise(error)
        return queued

    def _commit_queued(self) -> None:
        batch = [(operation, done) for operation, done in self._queued if not done.cancelled()]
        self._queued = []
        if not batch:
            return
        try:
            _settle(batch, _commit(self._require(self._loop_db), batch))
        except sqlite3.OperationalError as error:
            if not _locked(error):
                _settle(batch, [error] * len(batch))
                return
            # Another process holds the write lock: wait for it on the thread, off the loop.
            if self._thread is None or self._thread_db is None:
                _settle(batch, [RuntimeError("state store is not open")] * len(batch))
                return
            thread_db = self._thread_db
            waiting = asyncio.get_running_loop().run_in_executor(self._thread, lambda: _commit(thread_db, batch))
            waiting.add_done_callback(lambda answer: self._settle_from_thread(batch, answer))
            return
        except Exception as error:  # the store is closed, or the commit itself failed: nothing was written
            _settle(batch, [error] * len(batch))
            return
        self._wrote(len(batch))

    def _settle_from_thread(self, batch: Batch, answer: asyncio.Future[list[Any]]) -> None:
        if answer.cancelled():  # the loop is closing
            for _, done in batch:
                done.cancel()
        elif (error := answer.exception()) is not None:
            _settle(batch, [error] * len(batch))
        else:
            _settle(batch, answer.result())
            self._wrote(len(batch))

    def _wrote(self, count: int) -> None:
        before, self._writes = self._writes, self._writes + count
        if before // CHECKPOINT_EVERY_WRITES == self._writes // CHECKPOINT_EVERY_WRITES:
            return
        if self._thread is not None:
            checkpoint = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)
            checkpoint.add_done_callback(_log_checkpoint)

    def _checkpoint(self) -> str | None:
        """Copy the WAL into the database file and have the next commit write it from its start (on the store's
        thread); None once done, else why it could not finish (``StateUnavailable`` for the file's trouble).

        RESTART; TRUNCATE after one that did not finish, so that the space the WAL grew by meanwhile goes back to the
        disk. A full disk fails it when the database file must grow to take the WAL's pages: the WAL then grows with
        every commit until the disk's end, where the writes fail and the worker pauses (the probe makes the owed
        checkpoint). Another program's open transaction (a ``sqlite3`` shell, a backup) holds it back: SQLite
        cannot reset the WAL under a reader's snapshot, so it grows for as long as that program reads.
        """
        thread_db = self._require(self._thread_db)
        mode = "TRUNCATE" if self._checkpoint_owed else "RESTART"
        self._checkpoint_owed = True
        try:
            busy, _, _ = thread_db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.DatabaseError as error:
            self._reraise(error)
        if busy:
            size = _megabytes(f"{self.path}-wal")
            return (
                f"SQLite {self.path}: the WAL's checkpoint could not finish: another connection is reading or writing "
                f"the file (a sqlite3 shell left in a transaction, a backup), and the WAL ({size}) grows with every "
                "commit until it lets go"
            )
        self._checkpoint_owed = False
        return None

    def _owed_checkpoint(self) -> str | None:
        """The checkpoint, if the last one did not finish (the probe's, on the store's thread)."""
        return self._checkpoint() if self._checkpoint_owed else None

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
                    try:
                        db.execute(statement)
                    except sqlite3.OperationalError as error:
                        if _locked(error):
                            raise
                        # e.g. "table deliveries already exists": another application's database.
                        raise ConfigError(
                            "state.url", f"{self.path} is not a kordiam-bridge state database ({error})"
                        ) from None
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    async def deliveries(self, element_id: int) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE element_id = ? ORDER BY channel, publication_id"
        rows = await self._run(lambda db: db.execute(query, (element_id,)).fetchall())
        return [_delivery(row) for row in rows]

    async def deliveries_with_external_id(self, external_id: str) -> list[Delivery]:
        return await self._deliveries_by("deliveries_by_external_id", "external_id", external_id)

    async def deliveries_of_publication(self, publication_id: int) -> list[Delivery]:
        return await self._deliveries_by("deliveries_by_publication_id", "publication_id", publication_id)

    async def _deliveries_by(self, index: str, column: str, value: str | int) -> list[Delivery]:
        # INDEXED BY: the statement fails rather than scan the table should the index be missing.
        query = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries INDEXED BY {index} WHERE {column} = ? "
            "ORDER BY element_id, channel, publication_id"
        )
        rows = await self._run(lambda db: db.execute(query, (value,)).fetchall())
        return [_delivery(row) for row in rows]

    async def all_deliveries(self) -> list[Delivery]:
        # The whole table: on the thread, it may take a while.
        query = f"SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY element_id, channel, publication_id"
        rows = await self._read_on_thread(lambda db: db.execute(query).fetchall())
        return [_delivery(row) for row in rows]

    async def delivery_counts(self, limit: int) -> DeliveryCounts:
        _check_limit(limit)  # refused as DynamoDB's is, though not needed here
        # Every delivery, whatever ``limit``: the file is this host's own, no capacity is shared, and one aggregate
        # on the store's thread counts 300,000 deliveries in well under a second (building each as a ``Delivery``
        # took seconds and hundreds of MB).
        query = (
            "SELECT channel, COUNT(*), SUM(live), COUNT(DISTINCT element_id), MAX(modification_date) "
            "FROM deliveries GROUP BY channel"
        )
        rows = await self._read_on_thread(lambda db: db.execute(query).fetchall())
        channels = {str(row[0]): ChannelCounts(row[1], int(row[2] or 0), row[3], _parse(row[4])) for row in rows}
        return DeliveryCounts(channels, complete=True, read=sum(c.deliveries for c in channels.values()))

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
        return await self._write(lambda db: db.execute(RECORD, values).rowcount == 1)

    def lease(self, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        return held_lease(element_id, self._try_lease, self._release, self._keeper, wait_seconds=self._lease_wait)

    async def _release(self, held: HeldLease) -> None:
        # The lease given back only if it is still this owner's, as the statement's own condition says (its row
        # count). Only if it is not, a second statement marks the element for a re-sync: nothing more per message.
        element_id, mark, release = held.element_id, held.mark, (held.element_id, self._owner)

        def give_back(db: sqlite3.Connection) -> bool:
            return self._lost(db, element_id, db.execute(RELEASE, release), None)

        # Until a release statement has told: one that failed cannot rule the loss out.
        held.lost = True
        if mark is None:
            held.lost = await self._write(give_back)
        else:
            values = (*_mark_values(mark), self._owner)
            try:
                held.lost = await self._write(
                    lambda db: self._lost(db, element_id, db.execute(MARK_AND_RELEASE, values), mark)
                )
            except BaseException:
                # The mark failed and took the release down with it: give the lease back anyway (and tell whether it
                # was lost), as a failed mark_element would have left it given back, rather than hold the element
                # until the lease expires.
                held.lost = await self._write(give_back)
                _log_lost(held)
                raise
        _log_lost(held)

    def _lost(
        self, db: sqlite3.Connection, element_id: int, released: sqlite3.Cursor, mark: ElementMark | None
    ) -> bool:
        """Whether the release found the lease lost; if so, record its mark by the usual rule and mark the element
        for a re-sync with a token of its own (the owner and a count: unique)."""
        if released.rowcount == 1:
            return False
        token = f"{self._owner}#{next(self._releases)}"
        if mark is None:
            db.execute("UPDATE elements SET resync = ? WHERE element_id = ?", (token, element_id))
        else:
            db.execute(LOST_MARK, (*_mark_values(mark), token))
        return True

    async def _try_lease(self, element_id: int, replacing: str | None) -> HeldLease | str:
        now = time.time()
        values = (element_id, self._owner, now + self._lease_seconds, now, self._owner, replacing)

        def take(db: sqlite3.Connection) -> HeldLease | str:
            # fetchall: the statement must run to its end, or its autocommit transaction stays open.
            taken = db.execute(TRY_LEASE, values).fetchall()
            if taken:
                return HeldLease(element_id, mark_at_take=_mark(element_id, taken[0]), mark_at_take_known=True)
            row = db.execute("SELECT lease_owner FROM elements WHERE element_id = ?", (element_id,)).fetchone()
            return str(row[0]) if row and row[0] is not None else ""

        return await self._write(take)

    async def _extend_leases(self, element_ids: list[int]) -> set[int]:
        expires_at, owner = time.time() + self._lease_seconds, self._owner

        def extend(db: sqlite3.Connection) -> set[int]:
            statement = "UPDATE elements SET lease_expires_at = ? WHERE element_id = ? AND lease_owner = ?"
            return {e for e in element_ids if db.execute(statement, (expires_at, e, owner)).rowcount != 1}

        return await self._write(extend)

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        await self._write(
            lambda db: db.execute(
                "DELETE FROM deliveries WHERE element_id = ? AND channel = ? AND publication_id = ?",
                (element_id, channel, publication_id),
            )
        )

    async def element_mark(self, element_id: int) -> ElementMark | None:
        query = f"SELECT {MARK_COLUMNS} FROM elements WHERE element_id = ?"
        row = await self._run(lambda db: db.execute(query, (element_id,)).fetchone())
        return None if row is None else _mark(element_id, row)

    async def mark_element(self, mark: ElementMark) -> None:
        values = _mark_values(mark)
        await self._write(lambda db: db.execute(MARK_ELEMENT, values))

    async def element_record(self, element_id: int) -> ElementRecord:
        # The extra columns first, so that a column added to MARK_COLUMNS or DELIVERY_COLUMNS moves no index here.
        deliveries = (
            f"SELECT updated_at, {DELIVERY_COLUMNS} FROM deliveries WHERE element_id = ? "
            "ORDER BY channel, publication_id"
        )
        element = f"SELECT lease_owner, lease_expires_at, {MARK_COLUMNS} FROM elements WHERE element_id = ?"

        def read(db: sqlite3.Connection) -> ElementRecord:
            # On the thread: a store opened read-only (the operator's) has no connection on the loop.
            rows = db.execute(deliveries, (element_id,)).fetchall()
            row = db.execute(element, (element_id,)).fetchone()
            mark = None if row is None else _mark(element_id, row[2:])
            lease = None if row is None or row[0] is None else LeaseRecord(str(row[0]), float(row[1]))
            recorded = [RecordedDelivery(_delivery(r[1:]), _parse(r[0])) for r in rows]
            return ElementRecord(element_id, mark, recorded, lease)

        return await self._read_on_thread(read)

    async def park(self, element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        values = (channel, element_id, reason, _iso(since or datetime.now(UTC)), new_generation())
        await self._write(lambda db: db.execute(PARK, values))

    async def unpark(self, element_id: int, channel: str, *, generation: int | None = None) -> None:
        query = "DELETE FROM parked WHERE channel = ? AND element_id = ?"
        values: tuple[Any, ...] = (channel, element_id)
        if generation is not None:
            query += " AND generation = ?"
            values += (generation,)
        await self._write(lambda db: db.execute(query, values))

    async def parked(self, channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        _check_limit(limit)  # SQLite reads a negative LIMIT as none at all
        # A range of the primary key (channel, element_id): no sort, no scan.
        query = "SELECT element_id, reason, since, generation FROM parked WHERE channel = ?"
        values: tuple[Any, ...] = (channel,)
        if after is not None:
            query += " AND element_id > ?"
            values += (after,)
        query += " ORDER BY element_id LIMIT ?"
        rows = await self._read_on_thread(lambda db: db.execute(query, (*values, limit)).fetchall())
        return [Parked(row[0], channel, row[1], _since(row[2]), row[3]) for row in rows]

    async def parked_count(self, channel: str) -> int:
        query = "SELECT COUNT(*) FROM parked WHERE channel = ?"
        row = await self._read_on_thread(lambda db: db.execute(query, (channel,)).fetchone())
        return int(row[0])

    async def parked_channels(self) -> list[str]:
        def hop(db: sqlite3.Connection) -> list[str]:
            # One key lookup per channel (the primary key starts with it), however many elements each holds.
            names: list[str] = []
            row = db.execute("SELECT MIN(channel) FROM parked").fetchone()
            while row is not None and row[0] is not None:
                names.append(str(row[0]))
                row = db.execute("SELECT MIN(channel) FROM parked WHERE channel > ?", (row[0],)).fetchone()
            return names

        return await self._read_on_thread(hop)

    async def sweep_cursor(self, sweep: str) -> datetime | None:
        # On the thread: a store opened read-only (``status``) has no connection on the loop; once a sweep, no cost.
        query = "SELECT cursor FROM sweeps WHERE name = ?"
        row = await self._read_on_thread(lambda db: db.execute(query, (sweep,)).fetchone())
        return None if row is None else _parse(row[0])

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        values = (sweep, _iso(to))
        await self._write(lambda db: db.execute(ADVANCE_SWEEP_CURSOR, values))

    async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
        async def take(replacing: str | None) -> str | None:
            now = time.time()
            values = (sweep, self._owner, now + seconds, now, replacing)

            def attempt(db: sqlite3.Connection) -> str | None:
                if db.execute(TRY_SWEEP_LEASE, values).rowcount == 1:
                    return None
                row = db.execute("SELECT lease_owner FROM sweeps WHERE name = ?", (sweep,)).fetchone()
                return str(row[0]) if row and row[0] is not None else ""

            return await self._write(attempt)

        return await try_sweep_lease(sweep, take)

    async def release_sweep_lease(self, sweep: str) -> None:
        values = (sweep, self._owner)
        await self._write(
            lambda db: db.execute(
                "UPDATE sweeps SET lease_owner = NULL, lease_expires_at = NULL WHERE name = ? AND lease_owner = ?",
                values,
            )
        )

    async def _read_on_thread(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the store's thread: one off the message path (the whole deliveries table, the parked
        elements), which may take a while or wait for a lock, and works on a read-only store (``status``, ``parked
        list``), which has no connection on the loop; or one that found the file locked on the loop (``_run``)."""
        thread_db = self._require(self._thread_db)
        try:
            return await self._on_thread(lambda: operation(thread_db))
        except sqlite3.DatabaseError as error:
            self._reraise(error)

    async def probe(self) -> None:
        # Writes that need room in the WAL for more than a group commit of messages takes, then a read. One page
        # is not enough: a commit that failed on a full disk leaves the frames it wrote allocated past the WAL's
        # end, one page's write fits in them, and the probe passed while every message's write still failed (the
        # worker resumed and paused again, and a message whose own check passed spent a receive). A lock held by
        # another program or a read-only disk fails these writes as a message's.
        await self._write(_take_room)
        await self._write(_give_room_back)
        await self._run(lambda db: db.execute("SELECT MAX(version) FROM schema_version").fetchone())
        # After a checkpoint that did not finish, the probe makes it: on a full disk the database file may have no
        # room for the WAL's pages where the WAL still has room for the probe's, and the worker would resume and
        # fill the WAL up to the disk's end again. Once made, the WAL's space goes back to the disk. One that another
        # program's transaction holds back is no fault of the worker's: logged, and the probe passes.
        if (held_back := await self._on_thread(self._owed_checkpoint)) is not None:
            log.warning("wal_checkpoint_failed", error=held_back)
        await self._sync_now()

    async def flush(self) -> None:
        """Have the WAL synced within ``WAL_SYNC_SECONDS`` (an fdatasync on the store's thread, shared by every
        commit made meanwhile), without waiting for it; raise ``StateUnavailable`` while the last sync failed, so that
        no message is acknowledged until a sync passes again (this call then waits for one). Commits append to the
        WAL without a sync (``synchronous=NORMAL``, so that no commit blocks the loop)."""
        if self._sync_failed:
            await self._sync_now()
        elif self._syncing_soon is None and self._thread is not None:
            self._syncing_soon = asyncio.ensure_future(self._sync_soon())

    async def _sync_soon(self) -> None:
        """Sync the WAL ``WAL_SYNC_SECONDS`` from now, and again as long as commits came while one ran (the last
        message of a burst is synced too, whether or not another asks after it)."""
        try:
            while True:
                await asyncio.sleep(WAL_SYNC_SECONDS)
                committed = self._writes
                await self._sync_now()
                if self._writes == committed:
                    return
        except RuntimeError:  # closed meanwhile
            pass
        except Exception as error:  # the next flush raises it, and the worker pauses on the probe
            log.error("state_wal_sync_failed", error=f"{type(error).__name__}: {error}")
        finally:
            self._syncing_soon = None

    async def _sync_now(self) -> None:
        """fsync the WAL on the store's thread, raising the store's error if it cannot be. One sync serves every
        caller that asks while none runs; one that asks while one runs waits for the next, as its writes may have
        come after that one started."""
        waiting = self._sync_next
        if waiting is None:
            waiting = self._sync_next = asyncio.get_running_loop().create_future()
            if self._sync_running is None:
                self._start_sync(waiting)
        await asyncio.shield(waiting)

    def _start_sync(self, done: asyncio.Future[None]) -> None:
        self._sync_next, self._sync_running = None, done
        if self._thread is None:
            self._sync_running = None
            done.set_exception(RuntimeError("state store is not open"))
            return
        syncing = asyncio.get_running_loop().run_in_executor(self._thread, self._sync_wal)
        syncing.add_done_callback(lambda answer: self._synced(done, answer))

    def _synced(self, done: asyncio.Future[None], answer: asyncio.Future[None]) -> None:
        self._sync_running = None
        if answer.cancelled():  # the loop is closing
            done.cancel()
        elif (error := answer.exception()) is not None:
            self._sync_failed = True
            done.set_exception(error)
        else:
            self._sync_failed = False
            done.set_result(None)
        if self._sync_next is not None:
            self._start_sync(self._sync_next)

    def _sync_wal(self) -> None:
        if self._wal_in_doubt:
            self._rewrite_wal()
            return
        try:
            descriptor = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL (SQLite kept the file in a rollback journal mode): each commit synced itself
        except OSError as error:
            raise StateUnavailable(f"SQLite {self.path}: cannot open the WAL: {error.strerror or error}") from None
        try:
            # fdatasync, as SQLite's own syncs on Linux: the data and the size, not the modification time, whose
            # journal commit an fsync would wait for at every flush.
            os.fdatasync(descriptor)
        except OSError as error:  # EIO, or the disk remounted read-only: what the WAL holds may not be on disk
            self._wal_in_doubt = True
            raise StateUnavailable(
                f"SQLite {self.path}: cannot sync the WAL to disk: {error.strerror or error}"
            ) from None
        finally:
            os.close(descriptor)

    def _rewrite_wal(self) -> None:
        """After a failed sync of the WAL: Linux reports a failed writeback once and marks its pages clean, so the
        next fsync passes with those commits still not on disk. A checkpoint that copies every frame into the
        database file (read back from the page cache, which still holds them) and syncs it writes them again."""
        thread_db = self._require(self._thread_db)
        try:
            busy, _, _ = thread_db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.DatabaseError as error:
            self._reraise(error)
        if busy:
            raise StateUnavailable(
                f"SQLite {self.path}: a sync of the WAL failed, and the checkpoint that writes its commits again "
                "could not finish (another connection is reading or writing the file); retried at the next flush"
            )
        self._wal_in_doubt = self._checkpoint_owed = False


def _commit(db: sqlite3.Connection, batch: Batch) -> list[Any]:
    """Run the batch's writes in one transaction and return what each returned, or the exception it raised.

    A lone write runs in autocommit (a transaction of its own, without BEGIN and COMMIT to pay). If a write of a
    batch fails, the transaction is rolled back and each write runs again on its own, so that one fails alone.
    Raises (and writes nothing) only if the file is locked by another process: the caller then retries the batch
    on a connection that waits.
    """
    if len(batch) == 1:
        try:
            return [batch[0][0](db)]
        except sqlite3.OperationalError as error:
            if _locked(error):
                raise
            return [error]
        except Exception as error:
            return [error]
    db.execute("BEGIN IMMEDIATE")
    try:
        results = [operation(db) for operation, _ in batch]
    except Exception:
        # SQLite rolls the transaction back itself on some errors (a full disk, an I/O error): a ROLLBACK then
        # fails ("no transaction is active"), and its error would stand for every write of the batch.
        if db.in_transaction:
            db.execute("ROLLBACK")
        return [_alone(db, operation) for operation, _ in batch]
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # the commit failed and left it open: nothing of it happened
            db.execute("ROLLBACK")
        raise
    return results


def _alone(db: sqlite3.Connection, operation: Callable[[sqlite3.Connection], Any]) -> Any:
    try:
        return operation(db)
    except Exception as error:
        return error


def _settle(batch: Batch, results: list[Any]) -> None:
    # No write returns an exception as its value: an exception here is what the write raised.
    for (_, done), result in zip(batch, results, strict=True):
        if done.done():  # its caller was cancelled while the commit ran on the thread
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)


def _others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether other callbacks wait to run on the loop (asyncio's own loop keeps them in ``_ready``; on a loop
    that does not, assume there are, and queue the write)."""
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0


def _locked(error: sqlite3.DatabaseError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock this statement needs."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def _log_lost(held: HeldLease) -> None:
    if held.lost:
        log.warning(
            "lease_lost",
            element_id=held.element_id,
            hint="this worker stalled past state.lease_seconds and another worker took the element over; "
            "the element is marked for a re-sync, which rewrites its channels",
        )


def _log_checkpoint(done: asyncio.Future[str | None]) -> None:
    if done.cancelled():
        return
    if (error := done.exception()) is not None:
        log.warning("wal_checkpoint_failed", error=f"{type(error).__name__}: {error}")
    elif (held_back := done.result()) is not None:
        log.warning("wal_checkpoint_failed", error=held_back)


def _size(path: Path) -> int:
    """A file's size; 0 if there is none (or it cannot be read: opening the database names what is wrong)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _megabytes(path: str) -> str:
    try:
        return f"{os.path.getsize(path) / 1e6:.1f} MB"
    except OSError as error:
        return f"size unknown: {error.strerror or error}"


def _take_room(db: sqlite3.Connection) -> None:
    db.execute(PROBE_ROOM, (PROBE_ELEMENT_ID, PROBE_ROOM_BYTES))


def _give_room_back(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM elements WHERE element_id = ?", (PROBE_ELEMENT_ID,))


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
# An element's mark as ``_mark`` reads it: a row whose ``updated_at`` is NULL holds a lease and no mark (but perhaps
# a re-sync token).
MARK_COLUMNS = "updated_at IS NOT NULL, modification_date, version, deleted, fetched_at, resync"
RELEASE = "UPDATE elements SET lease_owner = NULL, lease_expires_at = NULL WHERE element_id = ? AND lease_owner = ?"
# Takes a free, expired, own or replaced lease and returns the element's mark; returns nothing if another holds it.
TRY_LEASE = (
    "INSERT INTO elements (element_id, lease_owner, lease_expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (element_id) DO UPDATE SET lease_owner = excluded.lease_owner, "
    "lease_expires_at = excluded.lease_expires_at "
    "WHERE elements.lease_owner IS NULL OR elements.lease_expires_at < ? OR elements.lease_owner = ? "
    f"OR elements.lease_owner = ? RETURNING {MARK_COLUMNS}"
)
# When a mark applies: one whose fetch started before the recorded one is ignored; one without a fetch time keeps
# the recorded time (the COALESCE below).
_MARK_APPLIES = (
    "(excluded.fetched_at IS NULL OR elements.fetched_at IS NULL OR excluded.fetched_at >= elements.fetched_at)"
)
# What each column of the mark takes when the mark applies.
_MARKED = {
    "modification_date": "excluded.modification_date",
    "version": "excluded.version",
    "deleted": "excluded.deleted",
    "fetched_at": "COALESCE(excluded.fetched_at, elements.fetched_at)",
    "updated_at": "excluded.updated_at",
}
_UPSERT_MARK = (
    "INSERT INTO elements (element_id, modification_date, version, deleted, fetched_at, updated_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (element_id) DO UPDATE SET "
)
# A mark that applies clears the re-sync token its sync read (?7), if it is still the element's.
_RESYNC_MADE_GOOD = "CASE WHEN elements.resync = ?7 THEN NULL ELSE elements.resync END"
MARK_ELEMENT = (
    _UPSERT_MARK
    + ", ".join(f"{column} = {value}" for column, value in _MARKED.items())
    + f", resync = {_RESYNC_MADE_GOOD} WHERE {_MARK_APPLIES}"
)
# MARK_ELEMENT and RELEASE in one statement, if the lease is still this owner's (?8): the mark recorded by the same
# rule, column by column (a WHERE on the rule would keep the release from happening). SET reads the row as it was
# before the update. Its row count tells whether the lease was still held.
_MARK_BY_RULE = ", ".join(
    f"{column} = CASE WHEN {_MARK_APPLIES} THEN {value} ELSE elements.{column} END" for column, value in _MARKED.items()
)
MARK_AND_RELEASE = (
    _UPSERT_MARK
    + _MARK_BY_RULE
    + f", resync = CASE WHEN {_MARK_APPLIES} THEN {_RESYNC_MADE_GOOD} ELSE elements.resync END"
    ", lease_owner = NULL, lease_expires_at = NULL WHERE elements.lease_owner = ?8"
)
# The mark of a release that found its lease lost (the same rule), and a new re-sync token (?8) for the element.
LOST_MARK = _UPSERT_MARK + _MARK_BY_RULE + ", resync = ?8"

# The cursor moves on only: the fixed-width text orders as the times do.
ADVANCE_SWEEP_CURSOR = (
    "INSERT INTO sweeps (name, cursor) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor "
    "WHERE sweeps.cursor IS NULL OR sweeps.cursor < excluded.cursor"
)
# Takes the sweep's lease (?1) for its owner (?2) until ?3 if it is free, expired (?4: now), the owner's own, or the
# lease of a gone owner being replaced (?5); changes no row if another holds it.
TRY_SWEEP_LEASE = (
    "INSERT INTO sweeps (name, lease_owner, lease_expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET "
    "lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at "
    "WHERE sweeps.lease_owner IS NULL OR sweeps.lease_expires_at < ?4 OR sweeps.lease_owner = ?2 "
    "OR sweeps.lease_owner = ?5"
)
# The probe's row: no element has id 0 (Kordiam's start at 1), and no statement scans the table.
PROBE_ELEMENT_ID = 0
# What the probe writes: 128 pages, several times what a group commit of a worker's messages writes. Where SQLite
# zeroes deleted content (SQLITE_SECURE_DELETE: Debian's, the image's), the delete writes them again: about 1 MiB of
# WAL in all (1.07 MB measured), which the README's runbook gives as the room a full disk needs back.
PROBE_ROOM_BYTES = 512 * 1024
PROBE_ROOM = (
    "INSERT INTO elements (element_id, resync) VALUES (?1, zeroblob(?2)) "
    "ON CONFLICT (element_id) DO UPDATE SET resync = excluded.resync"
)
# Parking again keeps the first ``since``, takes the latest refusal's text and a new generation.
PARK = (
    "INSERT INTO parked (channel, element_id, reason, since, generation) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (channel, element_id) DO UPDATE SET reason = excluded.reason, generation = excluded.generation"
)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error (the connection is in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:  # not rolled back by SQLite itself (a full disk, an I/O error)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _mark(element_id: int, row: Any) -> ElementMark | None:
    """The mark in a row of ``MARK_COLUMNS``; None if the row has none (it holds a lease only)."""
    if not row[0]:
        return None if row[5] is None else ElementMark(element_id, None, None, deleted=False, resync=row[5])
    return ElementMark(element_id, _parse(row[1]), row[2], bool(row[3]), row[4], row[5])


def _mark_values(mark: ElementMark) -> tuple[Any, ...]:
    return (
        mark.element_id,
        _iso(mark.modification_date),
        mark.version,
        int(mark.deleted),
        mark.fetched_at,
        _now(),
        mark.resync,
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
    return None if value is None else utc_text(value, microseconds=True)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _since(value: str) -> datetime:
    # ``_parse`` for a column that is never NULL.
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def _now() -> str:
    return utc_now_iso("+00:00")  # datetime.now(UTC).isoformat()'s text
