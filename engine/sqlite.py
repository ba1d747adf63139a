"""The one place that owns SQLite: connections, pragmas, transactions, migrations, and the
group-commit writer. The saga log and the three services' ledgers all open files here.

Every connection is put in WAL mode with `synchronous`, `busy_timeout` and `foreign_keys`
set on open. apsw opens no transaction by itself, so every write says what it means:
`BEGIN IMMEDIATE … COMMIT` (immediate, so a writer takes the lock up front and waits on the
busy timeout instead of failing half-way on a lock upgrade).

Writes go through a `Writer`: one thread owns the write connection and runs whatever units
of work are waiting as one transaction, each unit inside its own SAVEPOINT (one failing
unit rolls back alone), then resolves every caller after the single COMMIT. Many
concurrent writers therefore share one fsync instead of paying one each (group commit),
and no caller hears "done" before its unit is durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeVar

import apsw

from engine.errors import MigrationError, StorageError, StorageFault

__all__ = [
    "BatchStats",
    "DbConfig",
    "Synchronous",
    "Writer",
    "migrate",
    "open_connection",
    "storage_error",
    "transaction",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


class Synchronous(StrEnum):
    """SQLite's `synchronous` pragma. FULL survives power loss; NORMAL only a crash."""

    FULL = "FULL"
    NORMAL = "NORMAL"
    OFF = "OFF"


@dataclass(frozen=True, slots=True)
class DbConfig:
    path: Path
    synchronous: Synchronous = Synchronous.FULL
    busy_timeout_ms: int = 5_000
    readonly: bool = False


_FAULTS: Final[tuple[tuple[type[apsw.Error], StorageFault], ...]] = (
    (apsw.BusyError, StorageFault.BUSY),
    (apsw.LockedError, StorageFault.BUSY),
    (apsw.FullError, StorageFault.FULL),
    (apsw.ReadOnlyError, StorageFault.READONLY),
    (apsw.PermissionsError, StorageFault.READONLY),
    (apsw.AuthError, StorageFault.READONLY),
    (apsw.CorruptError, StorageFault.CORRUPT),
    (apsw.NotADBError, StorageFault.CORRUPT),
    (apsw.CantOpenError, StorageFault.CANTOPEN),
    (apsw.IOError, StorageFault.IO),
)

_MESSAGES: Final[dict[StorageFault, str]] = {
    StorageFault.BUSY: "the database is locked by another process past the busy timeout",
    StorageFault.FULL: "the disk holding the database is full",
    StorageFault.READONLY: "the database file or its folder is not writable",
    StorageFault.CORRUPT: "the file is not a SQLite database or is damaged",
    StorageFault.CANTOPEN: "the database file cannot be opened (missing folder or permissions)",
    StorageFault.IO: "an I/O error occurred on the database file",
}


def storage_error(exc: apsw.Error, path: Path | str) -> StorageError | None:
    """Translate a driver error about the file itself; None for errors of the SQL."""
    for kind, fault in _FAULTS:
        if isinstance(exc, kind):
            return StorageError(fault, f"{path}: {_MESSAGES[fault]} ({exc})", path=str(path))
    return None


@contextlib.contextmanager
def translated(path: Path | str) -> Iterator[None]:
    """Re-raise apsw's file-level errors as StorageError; SQL errors pass unchanged."""
    try:
        yield
    except apsw.Error as exc:
        err = storage_error(exc, path)
        if err is None:
            raise
        raise err from exc


def open_connection(cfg: DbConfig) -> apsw.Connection:
    """Open a connection with the project's pragmas. Does not migrate."""
    with translated(cfg.path):
        if cfg.readonly:
            flags = apsw.SQLITE_OPEN_READONLY
        else:
            try:
                cfg.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # the OS's error, translated here like the driver's
                raise StorageError(
                    StorageFault.CANTOPEN,
                    f"{cfg.path}: {_MESSAGES[StorageFault.CANTOPEN]} ({exc.strerror or exc})",
                    path=str(cfg.path),
                ) from exc
            flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        conn = apsw.Connection(str(cfg.path), flags=flags)
        conn.set_busy_timeout(cfg.busy_timeout_ms)
        if not cfg.readonly:
            mode = conn.pragma("journal_mode", "wal")
            if str(mode).lower() != "wal":
                raise StorageError(
                    StorageFault.IO,
                    f"{cfg.path}: cannot switch to WAL mode (got {mode!r})",
                    path=str(cfg.path),
                )
        conn.pragma("synchronous", cfg.synchronous.value)
        conn.pragma("foreign_keys", "ON")
        # Touch the schema now so a corrupt or foreign file fails at open, not mid-request.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        return conn


@contextlib.contextmanager
def transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """`BEGIN IMMEDIATE … COMMIT`, rolled back on any exception (commit failures too)."""
    path = conn.filename
    with translated(path):
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        with translated(path):
            conn.execute("COMMIT")
    except BaseException:
        if not conn.get_autocommit():
            with contextlib.suppress(apsw.Error):
                conn.execute("ROLLBACK")
        raise


def migrate(conn: apsw.Connection, migrations: Sequence[str]) -> int:
    """Apply numbered migrations (migration i moves `user_version` from i to i+1).

    Each runs in its own immediate transaction that re-reads the version, so two processes
    opening a new file at once migrate it once. Returns the resulting version.
    """
    for target, sql in enumerate(migrations, start=1):
        with transaction(conn):
            version = int(conn.pragma("user_version"))
            if version > len(migrations):
                raise MigrationError(
                    f"{conn.filename}: schema version {version} is newer than this program "
                    f"knows ({len(migrations)}); upgrade the program"
                )
            if version >= target:
                continue
            conn.execute(sql)
            conn.pragma("user_version", target)
    return int(conn.pragma("user_version"))


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one group commit did, for metrics: units committed and seconds spent."""

    units: int
    seconds: float


_Unit = tuple[Callable[[apsw.Connection], object], concurrent.futures.Future[object]]
_STOP: Final = object()


class Writer:
    """The single writer thread of one database file, with group commit.

    `await writer.run(fn)` (or `run_sync` from a plain thread) queues `fn(conn)`; the thread
    runs every queued unit in one `BEGIN IMMEDIATE … COMMIT`, each in a SAVEPOINT, and
    resolves the callers only after the COMMIT. An exception raised by `fn` rolls back that
    unit alone and is re-raised to its caller; a failed COMMIT fails the whole batch with a
    StorageError, and nothing of it is durable.
    """

    def __init__(
        self,
        cfg: DbConfig,
        migrations: Sequence[str] = (),
        *,
        max_batch: int = 1024,
        name: str = "sqlite-writer",
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Unit | object] = queue.SimpleQueue()
        self._conn = open_connection(cfg)
        try:
            migrate(self._conn, migrations)
        except BaseException:
            self._conn.close()
            raise
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn` in the next batch; return its result once it is durable."""
        return await asyncio.wrap_future(self.submit(fn))

    def run_sync(self, fn: Callable[[apsw.Connection], T], timeout: float | None = None) -> T:
        return self.submit(fn).result(timeout)

    def submit(self, fn: Callable[[apsw.Connection], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StorageError(StorageFault.IO, f"{self.cfg.path}: writer is closed")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, fut))
        return fut

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._conn.close()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Unit] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Unit]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[bool, object]] = []
        live = [(fn, fut) for fn, fut in batch if fut.set_running_or_notify_cancel()]
        try:
            with transaction(self._conn):
                for fn, _ in live:
                    outcomes.append(self._unit(fn))
        except BaseException as exc:  # the COMMIT (or BEGIN) failed: nothing is durable
            err = exc
            if isinstance(exc, apsw.Error):
                err = storage_error(exc, self.cfg.path) or exc
            for _, fut in live:
                fut.set_exception(err)
            if not isinstance(exc, Exception):
                raise
            return
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(live), time.perf_counter() - started))
        for (_, fut), (ok, value) in zip(live, outcomes, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)  # type: ignore[arg-type]

    def _unit(self, fn: Callable[[apsw.Connection], object]) -> tuple[bool, object]:
        conn = self._conn
        conn.execute("SAVEPOINT unit")
        try:
            value = fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            if isinstance(exc, apsw.Error):
                translated_exc = storage_error(exc, self.cfg.path)
                if translated_exc is not None:
                    return False, translated_exc
            return False, exc
        conn.execute("RELEASE unit")
        return True, value
