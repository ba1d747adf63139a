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
and no caller hears "done" before its unit is durable. Coroutines on one event loop hear
it together: one wake-up of their loop per commit, not one per unit.

A COMMIT that fails after it may have written is an unknown outcome, never "nothing
happened": the writer then takes no more work (docs/architecture.md, A failed COMMIT is an
unknown outcome).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Generic, NoReturn, TypeVar

import apsw

from engine.errors import CommitOutcomeUnknown, MigrationError, StorageError, StorageFault

__all__ = [
    "BatchStats",
    "DbConfig",
    "Synchronous",
    "Writer",
    "check_not_newer",
    "commit_failure",
    "end_process",
    "migrate",
    "open_connection",
    "powersafe_overwrite",
    "storage_error",
    "sync_folder",
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


# A COMMIT that raised one of these took no step that could make it durable: SQLite checks
# locks and deferred constraints before it writes a frame, and leaves the transaction open.
_NOTHING_WRITTEN: Final = (apsw.BusyError, apsw.LockedError, apsw.ConstraintError)


def commit_failure(
    exc: apsw.Error, path: Path | str, *, full_is_clean: bool
) -> StorageError | CommitOutcomeUnknown | apsw.Error:
    """What a COMMIT that raised `exc` left behind: nothing (a StorageError, or the SQL's
    own error) when a lock or a deferred constraint said no before SQLite wrote, or when
    the disk was full and `full_is_clean` (the file has powersafe overwrite, so the commit
    frame is the last thing written and a write that found no room cut it short);
    anything else may have left a whole commit frame: CommitOutcomeUnknown."""
    if isinstance(exc, _NOTHING_WRITTEN) or (full_is_clean and isinstance(exc, apsw.FullError)):
        return storage_error(exc, path) or exc
    name = (
        apsw.mapping_extended_result_codes.get(getattr(exc, "extendedresult", -1))
        or apsw.mapping_result_codes.get(getattr(exc, "result", -1))
        or type(exc).__name__
    )
    detail = f"{name}: {exc}" if str(exc) else str(name)
    return CommitOutcomeUnknown(
        f"{path}: a COMMIT failed after it may have written ({detail}); whether it is "
        "durable is unknown, and this writer takes no more work: restart the process",
        path=str(path),
    )


def powersafe_overwrite(conn: apsw.Connection) -> bool:
    """Whether SQLite treats the file as powersafe-overwrite (its unix default): then it
    writes nothing after a WAL commit frame (no padding to a sector boundary)."""
    flag = ctypes.c_int(-1)  # -1 asks for the current setting
    try:
        known = conn.file_control(
            "main", apsw.SQLITE_FCNTL_POWERSAFE_OVERWRITE, ctypes.addressof(flag)
        )
    except apsw.Error:
        return False
    return bool(known) and flag.value == 1


def _rollback(conn: apsw.Connection) -> None:
    """End a transaction that will not commit (SQLite may have rolled it back already).
    In WAL mode a rollback writes nothing: it drops the cached pages and the lock."""
    if not conn.get_autocommit():
        with contextlib.suppress(apsw.Error):
            conn.execute("ROLLBACK")


def sync_folder(folder: Path) -> None:
    """fsync `folder`, which makes the names created or deleted in it durable. A file
    system that cannot sync a folder (EINVAL) is let be, as SQLite does."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return
        raise StorageError(
            StorageFault.IO,
            f"{folder}: cannot sync the folder ({exc.strerror or exc})",
            path=str(folder),
        ) from exc


def end_process(exc: CommitOutcomeUnknown) -> NoReturn:
    """What a server does when a writer's COMMIT outcome turns unknown (PostgreSQL's answer
    to a failed fsync): end at once, as a crash would, before any caller of the failed
    batch hears a word. An HTTP client sees its connection drop, a gRPC caller UNAVAILABLE;
    both retry with the same key, and the next start (`saga up` restarts the process)
    reads what is really durable. Register it with `Writer.on_poisoned`."""
    log.critical("the outcome of a COMMIT is unknown: exiting with %d", exc.exit_code)
    logging.shutdown()  # flush that line: os._exit runs no handlers
    os._exit(exc.exit_code)


def open_connection(cfg: DbConfig) -> apsw.Connection:
    """Open a connection with the project's pragmas. Does not migrate."""
    if cfg.readonly:
        try:
            return _connect(cfg)
        except StorageError as exc:
            if exc.fault not in (StorageFault.CANTOPEN, StorageFault.READONLY):
                raise
            if Path(f"{cfg.path}-wal").exists():
                raise  # a live (or crashed) writer's WAL: immutable would read stale data
            # A WAL reader creates the `-shm` index beside the file; in a folder this user
            # cannot write (a log owned by the service's user, a read-only mount) that fails
            # even for reads. With no `-wal` file nobody has the log open for writing (a
            # writer creates it, a clean close removes it), so everything committed is in
            # the main file and SQLite may read it as immutable, without the index.
            return _connect(cfg, immutable=True)
    return _connect(cfg)


# Lock fairness between processes (a gateway and a recovery daemon, or a `saga prune`,
# writing the same log). SQLite has no queue for its write lock: a connection that finds
# it taken sleeps in its busy handler and tries again, and SQLite's own handler backs off
# to 100 ms between tries. A writer with work queued starts its next transaction within
# microseconds of its COMMIT, so a busy process could keep the lock for seconds while the
# other slept (docs/architecture.md, One owner for SQLite, has the measurements).
# So a waiter polls every half millisecond, and a writer that has run transactions back to
# back for FAIR_AFTER_S leaves the lock free for FAIR_GAP_S, long enough for a waiter's
# next poll to take it.
BUSY_POLL_S: Final = 0.0005
FAIR_AFTER_S: Final = 0.02
FAIR_GAP_S: Final = 0.001


def _busy_poller(timeout_ms: int) -> Callable[[int], bool]:
    """A busy handler: try again every BUSY_POLL_S until `timeout_ms` has passed since the
    wait began (SQLite passes 0 on a wait's first call)."""
    began = 0.0

    def busy(tries: int) -> bool:
        nonlocal began
        now = time.monotonic()
        if tries == 0:
            began = now
        if (now - began) * 1000 >= timeout_ms:
            return False
        time.sleep(BUSY_POLL_S)
        return True

    return busy


def _switch_to_wal(conn: apsw.Connection, timeout_ms: int) -> object:
    """`PRAGMA journal_mode=wal`, tried again while it is BUSY, up to `timeout_ms`.

    On a new file two processes opening it at once (`saga up`'s gateway and daemon, a
    gateway's workers) both read it in rollback mode, and the switch needs the exclusive
    lock. SQLite answers the second one BUSY at once, without its busy handler (waiting
    there could deadlock on the other's shared lock); our connection holds no lock once
    the statement ends, so trying again succeeds when the other's switch is done."""
    wait = _busy_poller(timeout_ms)  # the same pace and limit as any other wait for a lock
    tries = 0
    while True:
        try:
            return conn.pragma("journal_mode", "wal")
        except apsw.BusyError:
            if not wait(tries):
                raise
            tries += 1


def _connect(cfg: DbConfig, *, immutable: bool = False) -> apsw.Connection:
    with translated(cfg.path):
        name = str(cfg.path)
        if immutable:
            name = f"file:{urllib.parse.quote(name)}?immutable=1"
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        elif cfg.readonly:
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
        conn = apsw.Connection(name, flags=flags)
        conn.set_busy_handler(_busy_poller(cfg.busy_timeout_ms))
        if not cfg.readonly:
            mode = _switch_to_wal(conn, cfg.busy_timeout_ms)
            if str(mode).lower() != "wal":
                raise StorageError(
                    StorageFault.IO,
                    f"{cfg.path}: cannot switch to WAL mode (got {mode!r})",
                    path=str(cfg.path),
                )
        conn.pragma("synchronous", cfg.synchronous.value)
        conn.pragma("foreign_keys", "ON")
        # Touch the schema now so a corrupt or foreign file fails at open, not mid-request.
        # (In WAL mode this first read also opens the `-wal` file, creating it if need be.)
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    if not cfg.readonly:
        # The new file, the journal SQLite switched it to WAL with (now deleted) and the WAL
        # are names, durable once their folder is synced: else a power cut can bring the
        # journal back, which empties the database (docs/architecture.md).
        try:
            sync_folder(Path(os.path.realpath(cfg.path)).parent)  # SQLite follows symlinks
        except StorageError:
            conn.close()
            raise
    return conn


@contextlib.contextmanager
def transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """`BEGIN IMMEDIATE … COMMIT`, rolled back on any exception. A COMMIT that fails
    after it may have written raises CommitOutcomeUnknown (see `commit_failure`)."""
    path = conn.filename
    with translated(path):
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except apsw.Error as exc:
        failure = commit_failure(exc, path, full_is_clean=powersafe_overwrite(conn))
        _rollback(conn)
        if failure is exc:
            raise
        raise failure from exc


def check_not_newer(path: Path | str, version: int, known: int) -> None:
    """A file migrated by a later program than this one is refused, not misread."""
    if version > known:
        raise MigrationError(
            f"{path}: schema version {version} is newer than this program knows ({known}); "
            "upgrade the program"
        )


def migrate(conn: apsw.Connection, migrations: Sequence[str]) -> int:
    """Apply numbered migrations (migration i moves `user_version` from i to i+1).

    Each runs in its own immediate transaction that re-reads the version, so two processes
    opening a new file at once migrate it once. Returns the resulting version.
    """
    for target, sql in enumerate(migrations, start=1):
        with transaction(conn):
            version = int(conn.pragma("user_version"))
            check_not_newer(conn.filename, version, len(migrations))
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


@dataclass(slots=True)
class _Unit(Generic[T]):
    """One queued unit and whoever waits for it: a thread (`future`, from `submit`) or a
    coroutine (`waiter` on `loop`, from `run`)."""

    fn: Callable[[apsw.Connection], T]
    future: concurrent.futures.Future[T] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[T] | None = None

    def start(self) -> bool:
        """False if the caller gave up before the batch began: the unit is skipped."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        # Read from the writer thread: a cancel that lands just after this check is the
        # same as a cancel during the commit: the unit commits and the caller has left.
        return self.waiter is not None and not self.waiter.cancelled()


_Outcome = tuple[_Unit[object], bool, object]  # the unit, ok?, its value or exception
_STOP: Final = object()


class _TransactionLost(Exception):
    """A unit failed and SQLite rolled the whole transaction back with it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _settle_on_loop(outcomes: list[_Outcome]) -> None:
    """Runs on the callers' event loop: hand each coroutine its unit's outcome."""
    for unit, ok, value in outcomes:
        waiter = unit.waiter
        if waiter is None or waiter.done():  # cancelled while the batch committed
            continue
        if ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)  # type: ignore[arg-type]


class Writer:
    """The single writer thread of one database file, with group commit.

    `await writer.run(fn)` (or `run_sync` from a plain thread) queues `fn(conn)`; the thread
    runs every queued unit in one `BEGIN IMMEDIATE … COMMIT`, each in a SAVEPOINT, and
    resolves the callers only after the COMMIT. An exception raised by `fn` rolls back that
    unit alone and is re-raised to its caller. A batch that fails before its COMMIT, or
    whose COMMIT wrote nothing (`commit_failure`), fails every unit with a StorageError.
    A COMMIT whose outcome is unknown fails them with CommitOutcomeUnknown and poisons the
    writer: every later unit fails the same way, nothing more is written through its
    connection, and `on_poisoned` listeners are told before any caller.
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
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # units and _STOP
        self._conn = open_connection(cfg)
        try:
            migrate(self._conn, migrations)
        except BaseException:
            self._conn.close()
            raise
        self._full_is_clean = powersafe_overwrite(self._conn)
        self._poisoned: CommitOutcomeUnknown | None = None
        self._listeners: list[Callable[[CommitOutcomeUnknown], None]] = []
        self._listeners_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn` in the next batch; return its result once it is durable.

        The coroutine waits on a plain asyncio future that the writer resolves, with every
        other waiter of the batch on the same loop, in one `call_soon_threadsafe`: one
        wake-up of the loop per commit, not one per unit (see `_settle`)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Unit(fn, loop=loop, waiter=waiter))
        return await waiter

    def run_sync(self, fn: Callable[[apsw.Connection], T], timeout: float | None = None) -> T:
        return self.submit(fn).result(timeout)

    def submit(self, fn: Callable[[apsw.Connection], T]) -> concurrent.futures.Future[T]:
        self._check_open()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Unit(fn, future=fut))
        return fut

    @property
    def poisoned(self) -> CommitOutcomeUnknown | None:
        """The unknown outcome that stopped this writer, if one has."""
        return self._poisoned

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        """Call `listener` once when a COMMIT's outcome turns unknown (at once if it already
        has). It runs on the writer's thread before any caller of the failed batch is told,
        so a server's `end_process` ends the process before anyone hears a word."""
        with self._listeners_lock:
            poisoned = self._poisoned
            if poisoned is None:
                self._listeners.append(listener)
                return
        listener(poisoned)

    def _unknown(self) -> CommitOutcomeUnknown:
        """A fresh error for one caller (an exception object is raised once)."""
        assert self._poisoned is not None
        return CommitOutcomeUnknown(self._poisoned.message, path=self._poisoned.path)

    def _check_open(self) -> None:
        if self._poisoned is not None:
            raise self._unknown()
        if self._closed:
            raise StorageError(StorageFault.IO, f"{self.cfg.path}: writer is closed")

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        try:
            self._conn.close()
        except apsw.Error as exc:
            # Closing checkpoints the WAL, which fails the way the storage is failing (an
            # fsync error that poisoned the writer, a full disk). Nothing is lost: what
            # committed is in the WAL, replayed at the next open. Raising here would turn
            # an orderly shutdown into a crash of whatever closes the ledger.
            log.warning("%s: closing after a storage failure: %s", self.cfg.path, exc)

    def _loop(self) -> None:
        streak: float | None = None  # when the current run of back-to-back batches began
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Unit)
            batch: list[_Unit[object]] = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, _Unit)
                batch.append(item)
            began = time.monotonic()
            self._commit(batch)
            if stop:
                return
            if self._queue.empty():
                streak = None
                continue
            streak = began if streak is None else streak
            if time.monotonic() - streak >= FAIR_AFTER_S:
                time.sleep(FAIR_GAP_S)  # another process may be waiting: see FAIR_AFTER_S
                streak = None

    def _commit(self, batch: list[_Unit[object]]) -> None:
        started = time.perf_counter()
        live = [unit for unit in batch if unit.start()]
        if self._poisoned is not None:
            self._settle([(unit, False, self._unknown()) for unit in live])
            return
        conn = self._conn
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for unit in live:
                ok, value = self._unit(unit.fn)
                outcomes.append((unit, ok, value))
        except BaseException as exc:  # before any COMMIT: nothing of the batch is durable
            _rollback(conn)
            err = exc.error if isinstance(exc, _TransactionLost) else self._translate(exc)
            self._settle([(unit, False, err) for unit in live])
            if not isinstance(exc, Exception):
                raise
            return
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            failure = (
                commit_failure(exc, self.cfg.path, full_is_clean=self._full_is_clean)
                if isinstance(exc, apsw.Error)
                else CommitOutcomeUnknown(f"{self.cfg.path}: COMMIT interrupted ({exc!r})")
            )
            _rollback(conn)
            if isinstance(failure, CommitOutcomeUnknown):
                self._poison(failure)
                self._settle([(unit, False, self._unknown()) for unit in live])
            else:
                self._settle([(unit, False, failure) for unit in live])
            if not isinstance(exc, Exception):
                raise
            return
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(live), time.perf_counter() - started))
        self._settle(outcomes)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, apsw.Error):
            return storage_error(exc, self.cfg.path) or exc
        return exc

    def _poison(self, err: CommitOutcomeUnknown) -> None:
        log.critical("%s", err.message)
        # Not even a close may write through this connection (a last connection's close
        # checkpoints the WAL into the database).
        with contextlib.suppress(apsw.Error):
            self._conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        with self._listeners_lock:
            self._poisoned = err
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(err)

    def _settle(self, outcomes: list[_Outcome]) -> None:
        """Tell every caller of the batch how its unit went. Threads are told directly;
        coroutines through one `call_soon_threadsafe` per event loop: each such call
        writes to the loop's self-pipe and takes a turn of the loop; done per unit, with a
        Future and a chaining callback each, it was a large share of the loop's time
        under load (docs/benchmarks.md)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            unit, ok, value = outcome
            if unit.future is not None:
                if ok:
                    unit.future.set_result(value)
                else:
                    unit.future.set_exception(value)  # type: ignore[arg-type]
            elif unit.loop is not None:
                by_loop.setdefault(unit.loop, []).append(outcome)
        for loop, mine in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle_on_loop, mine)

    def _unit(self, fn: Callable[[apsw.Connection], object]) -> tuple[bool, object]:
        conn = self._conn
        conn.execute("SAVEPOINT unit")
        try:
            value = fn(conn)
        except Exception as exc:
            err = self._translate(exc)
            if conn.get_autocommit():
                # SQLite rolled the whole transaction back (an I/O error, or a full disk
                # while it spilled pages): the units before this one are gone too, and the
                # next would run outside any transaction. The batch fails as a whole.
                raise _TransactionLost(err) from exc
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            return False, err
        conn.execute("RELEASE unit")
        return True, value
