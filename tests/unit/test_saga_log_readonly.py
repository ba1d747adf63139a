"""The saga log opened read-only (what `saga ls`, `saga show` and the audit use): it reads
what writers committed while one of them holds the write lock, never writes, never
migrates, and refuses a file it cannot read as a saga log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.errors import MigrationError, StorageError, StorageFault
from engine.saga_log import NewSaga
from engine.sqlite import DbConfig, migrate, open_connection
from engine.sqlite_log import MIGRATIONS, SqliteSagaLog
from tests.support.folders import unwritable_folder

NOW = 1_700_000_000_000


def write_one(path: Path) -> None:
    log = SqliteSagaLog.open(DbConfig(path))
    try:
        asyncio.run(
            log.create(NewSaga("s1", "order", b"{}"), owner="a", lease_expires_ms=NOW, now_ms=NOW)
        )
    finally:
        log.close_sync()


def test_reads_while_a_writer_holds_the_lock_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    write_one(path)
    holder = open_connection(DbConfig(path))
    holder.execute("BEGIN IMMEDIATE")  # a writer mid-transaction, for as long as it likes
    try:
        with pytest.raises(StorageError) as busy:  # a writable open waits to migrate
            SqliteSagaLog.open(DbConfig(path, busy_timeout_ms=50))
        assert busy.value.fault is StorageFault.BUSY
        log = SqliteSagaLog.open_readonly(DbConfig(path, busy_timeout_ms=50))
        try:
            record = log.get_sync("s1")
            assert record is not None and record.status is SagaStatus.RUNNING
            assert [t.phase for t in log.transitions_sync("s1")] == [Phase.CREATED]
            with pytest.raises(StorageError) as info:
                asyncio.run(
                    log.append(
                        "s1",
                        1,
                        [Transition("x", Phase.INTENT, 1)],
                        status=SagaStatus.RUNNING,
                        reason=None,
                        now_ms=NOW,
                    )
                )
            assert info.value.fault is StorageFault.READONLY
        finally:
            log.close_sync()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    check = SqliteSagaLog.open(DbConfig(path))
    try:
        assert [t.phase for t in check.transitions_sync("s1")] == [Phase.CREATED]
    finally:
        check.close_sync()


def test_an_older_log_is_read_as_it_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    old = open_connection(DbConfig(path))
    migrate(old, MIGRATIONS[:1])
    old.close()
    log = SqliteSagaLog.open_readonly(DbConfig(path))
    try:
        assert log.get_sync("nope") is None
    finally:
        log.close_sync()
    conn = open_connection(DbConfig(path, readonly=True))
    assert int(conn.pragma("user_version")) == 1  # a look is not an upgrade
    conn.close()


@pytest.mark.parametrize(("version", "says"), [(0, "not a saga log yet"), (99, "upgrade")])
def test_a_file_it_cannot_read_is_refused(tmp_path: Path, version: int, says: str) -> None:
    path = tmp_path / "saga.db"
    conn = open_connection(DbConfig(path))
    conn.pragma("user_version", version)
    conn.close()
    with pytest.raises(MigrationError, match=says):
        SqliteSagaLog.open_readonly(DbConfig(path))


def test_a_stopped_log_in_a_folder_it_cannot_write_is_read(tmp_path: Path) -> None:
    # A log owned by the service's user, or on a read-only mount: a WAL reader's `-shm`
    # cannot be created beside it. With no `-wal` nothing is uncommitted to the main file.
    path = tmp_path / "saga.db"
    write_one(path)
    assert not Path(f"{path}-wal").exists()
    with unwritable_folder(tmp_path):
        with pytest.raises(StorageError):  # a writable open still fails, as it must
            SqliteSagaLog.open(DbConfig(path))
        log = SqliteSagaLog.open_readonly(DbConfig(path))
        try:
            record = log.get_sync("s1")
            assert record is not None and record.status is SagaStatus.RUNNING
        finally:
            log.close_sync()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saga.db"]


def test_a_live_log_in_a_folder_it_cannot_write_shows_its_latest_commits(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    writer = SqliteSagaLog.open(DbConfig(path))
    try:
        asyncio.run(write_more(writer, "s1"))
        with unwritable_folder(tmp_path):
            asyncio.run(write_more(writer, "s2"))  # only in the `-wal` file so far
            log = SqliteSagaLog.open_readonly(DbConfig(path))
            try:
                assert log.get_sync("s2") is not None
            finally:
                log.close_sync()
    finally:
        writer.close_sync()


def test_a_wal_it_cannot_index_is_an_error_not_a_stale_read(tmp_path: Path) -> None:
    # A `-wal` holds commits the main file lacks; reading around it would hide them.
    live = tmp_path / "live"
    live.mkdir()
    writer = SqliteSagaLog.open(DbConfig(live / "saga.db"))
    try:
        asyncio.run(write_more(writer, "s1"))
        copy = tmp_path / "copy"
        copy.mkdir()
        for name in ("saga.db", "saga.db-wal"):  # as a crash left it, less the index
            (copy / name).write_bytes((live / name).read_bytes())
    finally:
        writer.close_sync()
    with unwritable_folder(copy), pytest.raises(StorageError) as info:
        SqliteSagaLog.open_readonly(DbConfig(copy / "saga.db"))
    assert info.value.fault in (StorageFault.CANTOPEN, StorageFault.READONLY)


async def write_more(log: SqliteSagaLog, saga_id: str) -> None:
    await log.create(NewSaga(saga_id, "order", b"{}"), owner=None, lease_expires_ms=0, now_ms=NOW)
