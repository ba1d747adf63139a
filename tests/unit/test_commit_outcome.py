"""A failed COMMIT is an unknown outcome unless SQLite wrote nothing: the writer's rule,
against a file system that fails under it (tests/support/faultvfs.py).

Each test reads the file afterwards, as the next process would after a SIGKILL (the files
copied, the WAL index left behind), to show what the answer promised is what is there."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from engine.errors import CommitOutcomeUnknown, StorageError, StorageFault
from engine.sqlite import (
    DbConfig,
    Writer,
    commit_failure,
    open_connection,
    powersafe_overwrite,
    transaction,
)
from tests.support.faultvfs import Fault, FaultVFS, installed

MIGRATIONS = ("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)",)


@pytest.fixture
def vfs() -> Iterator[FaultVFS]:
    with installed() as fault_vfs:
        yield fault_vfs


def _put(key: str, size: int = 100) -> Callable[[apsw.Connection], str]:
    def unit(conn: apsw.Connection) -> str:
        conn.execute("INSERT INTO kv (k, v) VALUES (?, zeroblob(?))", (key, size))
        return key

    return unit


def after_kill(path: Path, into: Path) -> set[str]:
    """The keys a fresh process finds in the file (copied without its WAL index, as a
    SIGKILL leaves it: the next opener rebuilds the index from the WAL)."""
    into.mkdir()
    for name in (path.name, f"{path.name}-wal"):
        if (path.parent / name).exists():
            shutil.copy(path.parent / name, into / name)
    conn = apsw.Connection(str(into / path.name), vfs="unix")
    try:
        return {str(k) for (k,) in conn.execute("SELECT k FROM kv")}
    finally:
        conn.close()


def test_a_failed_fsync_at_commit_is_unknown_and_poisons_the_writer(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    path = tmp_path / "f.db"
    writer = Writer(DbConfig(path), MIGRATIONS)
    heard: list[str] = []
    writer.on_poisoned(lambda exc: heard.append(exc.code))
    try:
        writer.run_sync(_put("before"), 5)
        vfs.arm(Fault("f.db-wal", "sync", 1, apsw.SQLITE_IOERR_FSYNC))
        with pytest.raises(CommitOutcomeUnknown) as failed:
            writer.run_sync(_put("during"), 5)
        assert not isinstance(failed.value, StorageError)  # never "nothing happened"
        assert heard == ["outcome_unknown"]
        assert writer.poisoned is not None
        vfs.disarm()
        size = (tmp_path / "f.db-wal").stat().st_size
        with pytest.raises(CommitOutcomeUnknown):
            writer.run_sync(_put("after"), 5)  # the storage works again: still refused
        assert (tmp_path / "f.db-wal").stat().st_size == size  # nothing more was written
        late: list[str] = []
        writer.on_poisoned(lambda exc: late.append(exc.code))
        assert late == ["outcome_unknown"]  # a listener that comes late hears at once
    finally:
        writer.close()
    # The unknown, made concrete: the frames reached the file (the page cache), so the
    # next process finds the row that was never acknowledged.
    assert after_kill(path, tmp_path / "next") == {"before", "during"}


def test_closing_on_storage_that_still_fails_loses_nothing_and_does_not_raise(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    """Closing checkpoints the WAL: on a disk whose fsync fails, that checkpoint fails too.
    The writer still closes (an orderly shutdown must not crash its process), and what
    committed before is all there for the next process."""
    path = tmp_path / "c.db"
    writer = Writer(DbConfig(path), MIGRATIONS)
    writer.run_sync(_put("before"), 5)
    vfs.arm(Fault("c.db", "sync", 1, apsw.SQLITE_IOERR_FSYNC, lasting=True))
    vfs.arm(Fault("c.db-wal", "sync", 1, apsw.SQLITE_IOERR_FSYNC, lasting=True))
    writer.close()  # does not raise
    vfs.disarm()
    assert after_kill(path, tmp_path / "next") == {"before"}


def test_a_failed_write_at_commit_is_unknown(vfs: FaultVFS, tmp_path: Path) -> None:
    writer = Writer(DbConfig(tmp_path / "w.db"), MIGRATIONS)
    try:
        vfs.arm(Fault("w.db-wal", "write", 2, apsw.SQLITE_IOERR_WRITE))
        with pytest.raises(CommitOutcomeUnknown):
            writer.run_sync(_put("k", 10_000), 5)
        assert writer.poisoned is not None
    finally:
        writer.close()


def test_a_full_disk_at_commit_wrote_nothing_and_the_writer_goes_on(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    # The commit frame is the last thing SQLite writes, and a write that finds no room
    # leaves it cut short: recovery ignores it. So a full disk is a clean refusal.
    path = tmp_path / "full.db"
    writer = Writer(DbConfig(path), MIGRATIONS)
    try:
        for nth in (1, 2, 3, 5, 8):
            vfs.arm(Fault("full.db-wal", "write", nth, apsw.SQLITE_FULL, lasting=True, short=True))
            with pytest.raises(StorageError) as full:
                writer.run_sync(_put(f"lost{nth}", 20_000), 5)
            assert full.value.fault is StorageFault.FULL
            assert writer.poisoned is None
            vfs.disarm()
        assert writer.run_sync(_put("room again"), 5) == "room again"
    finally:
        writer.close()
    assert after_kill(path, tmp_path / "next") == {"room again"}


def test_a_full_disk_is_unknown_when_sqlite_pads_after_the_commit_frame(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    # Without powersafe overwrite SQLite pads the WAL to a sector boundary with copies of
    # the commit frame, after the commit frame: a full disk there leaves a whole commit.
    path = tmp_path / "pad.db"
    conn = apsw.Connection(
        f"file:{path}?psow=0",
        flags=apsw.SQLITE_OPEN_URI | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
    )
    conn.pragma("journal_mode", "wal")
    conn.execute(MIGRATIONS[0])
    assert not powersafe_overwrite(conn)
    committed_anyway = 0
    for nth in range(1, 12):
        vfs.arm(Fault("pad.db-wal", "write", nth, apsw.SQLITE_FULL, lasting=True, short=True))
        try:
            with transaction(conn):
                _put(f"k{nth}", 3000)(conn)
        except CommitOutcomeUnknown:
            vfs.disarm()
            committed_anyway += f"k{nth}" in after_kill(path, tmp_path / f"next{nth}")
        vfs.disarm()
    conn.close()
    assert committed_anyway > 0  # why a full disk is clean only with powersafe overwrite


def test_the_projects_connections_have_powersafe_overwrite(tmp_path: Path) -> None:
    conn = open_connection(DbConfig(tmp_path / "p.db"))
    try:
        assert powersafe_overwrite(conn)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("error", "clean"),
    [
        (apsw.BusyError, True),
        (apsw.LockedError, True),
        (apsw.ConstraintError, True),  # a deferred constraint: checked before any write
        (apsw.FullError, True),
        (apsw.IOError, False),
        (apsw.CorruptError, False),
        (apsw.ReadOnlyError, False),
        (apsw.NoMemError, False),
        (apsw.SQLError, False),
    ],
)
def test_which_commit_failures_wrote_nothing(error: type[apsw.Error], clean: bool) -> None:
    failure = commit_failure(error("x"), "x.db", full_is_clean=True)
    assert isinstance(failure, CommitOutcomeUnknown) is not clean
    if error is apsw.FullError:
        unpadded = commit_failure(error("x"), "x.db", full_is_clean=False)
        assert isinstance(unpadded, CommitOutcomeUnknown)


def test_a_lock_held_past_the_timeout_is_a_clean_refusal(tmp_path: Path) -> None:
    cfg = DbConfig(tmp_path / "b.db", busy_timeout_ms=50)
    writer = Writer(cfg, MIGRATIONS)
    holder = open_connection(cfg)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError) as busy:
            writer.run_sync(_put("k"), 5)
        assert busy.value.fault is StorageFault.BUSY
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    try:
        assert writer.poisoned is None
        assert writer.run_sync(_put("k"), 5) == "k"  # the same unit, once the lock is free
    finally:
        writer.close()


def test_a_unit_that_loses_the_transaction_fails_the_batch_cleanly(
    vfs: FaultVFS, tmp_path: Path
) -> None:
    # A unit bigger than the page cache spills pages to the WAL mid-transaction; a full
    # disk there fails its statement, and SQLite may roll the whole transaction back.
    path = tmp_path / "spill.db"
    writer = Writer(DbConfig(path), MIGRATIONS)
    try:
        writer.run_sync(_put("before"), 5)
        vfs.arm(Fault("spill.db-wal", "write", 3, apsw.SQLITE_FULL, lasting=True, short=True))

        def big(conn: apsw.Connection) -> None:
            for i in range(400):
                conn.execute("INSERT INTO kv (k, v) VALUES (?, randomblob(16000))", (f"b{i}",))

        with pytest.raises(StorageError) as full:
            writer.run_sync(big, 10)
        assert full.value.fault is StorageFault.FULL
        assert writer.poisoned is None
        vfs.disarm()
        assert writer.run_sync(_put("after"), 5) == "after"
    finally:
        writer.close()
    assert after_kill(path, tmp_path / "next") == {"before", "after"}
