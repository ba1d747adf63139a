"""The SQLite owner: pragmas, migrations, transactions, group commit, error translation."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from engine.errors import MigrationError, StorageError, StorageFault
from engine.sqlite import BatchStats, DbConfig, Writer, migrate, open_connection, transaction

MIGRATIONS = (
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "ALTER TABLE kv ADD COLUMN note TEXT",
)


def test_open_sets_the_pragmas(tmp_path: Path) -> None:
    conn = open_connection(DbConfig(tmp_path / "sub" / "a.db"))
    assert conn.pragma("journal_mode") == "wal"
    assert conn.pragma("synchronous") == 2  # FULL
    assert conn.pragma("foreign_keys") == 1


def test_a_writer_waits_for_the_lock_up_to_its_busy_timeout(tmp_path: Path) -> None:
    # The project's own busy handler (engine/sqlite.py, FAIR_AFTER_S) keeps the timeout.
    path = tmp_path / "a.db"
    holder = open_connection(DbConfig(path))
    holder.execute("BEGIN IMMEDIATE")
    patient, hasty = (
        open_connection(DbConfig(path)),
        open_connection(DbConfig(path, busy_timeout_ms=50)),
    )
    with pytest.raises(apsw.BusyError):
        hasty.execute("BEGIN IMMEDIATE")  # held past its timeout: refused
    release = threading.Timer(0.2, lambda: holder.execute("ROLLBACK"))
    release.start()
    patient.execute("BEGIN IMMEDIATE")  # waited for the holder to let go, then took it
    patient.execute("ROLLBACK")
    release.join()


def test_migrations_are_numbered_and_run_once(tmp_path: Path) -> None:
    cfg = DbConfig(tmp_path / "m.db")
    a, b = open_connection(cfg), open_connection(cfg)
    assert migrate(a, MIGRATIONS[:1]) == 1
    assert migrate(b, MIGRATIONS) == 2
    assert migrate(a, MIGRATIONS) == 2  # already there: nothing runs twice
    cols = [row[1] for row in a.execute("PRAGMA table_info(kv)")]
    assert cols == ["k", "v", "note"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = open_connection(DbConfig(tmp_path / "n.db"))
    migrate(conn, MIGRATIONS)
    with pytest.raises(MigrationError, match="newer than this program"):
        migrate(conn, MIGRATIONS[:1])


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    conn = open_connection(DbConfig(tmp_path / "t.db"))
    migrate(conn, MIGRATIONS)

    def insert_then_fail() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    assert conn.execute("SELECT count(*) FROM kv").fetchall() == [(0,)]
    assert conn.get_autocommit()


def test_corrupt_file_is_a_clear_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as info:
        open_connection(DbConfig(path))
    assert info.value.fault is StorageFault.CORRUPT
    assert str(path) in info.value.message


def test_a_folder_that_cannot_be_made_is_a_clear_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError) as err:
        open_connection(DbConfig(tmp_path / "file" / "sub" / "a.db"))
    assert err.value.fault is StorageFault.CANTOPEN


def test_unwritable_folder_is_a_clear_storage_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permissions; a file where the folder should be fails for root too
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "x.db"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        path = ro / "x.db"
    with pytest.raises((StorageError, OSError)):
        open_connection(DbConfig(path))


async def test_group_commit_batches_concurrent_units(tmp_path: Path) -> None:
    stats: list[BatchStats] = []
    writer = Writer(DbConfig(tmp_path / "g.db"), MIGRATIONS, on_batch=stats.append)
    try:

        def put(i: int) -> Callable[[apsw.Connection], int]:
            def unit(conn: apsw.Connection) -> int:
                conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (f"k{i}", i))
                return i

            return unit

        results = await asyncio.gather(*(writer.run(put(i)) for i in range(500)))
        assert results == list(range(500))
        assert sum(s.units for s in stats) == 500
        assert len(stats) < 500, "concurrent units must share commits"
    finally:
        writer.close()
    check = open_connection(DbConfig(tmp_path / "g.db"))
    assert check.execute("SELECT count(*), sum(v) FROM kv").fetchall() == [(500, sum(range(500)))]


async def test_a_failing_unit_rolls_back_alone(tmp_path: Path) -> None:
    writer = Writer(DbConfig(tmp_path / "s.db"), MIGRATIONS)
    try:
        gate = threading.Event()

        def slow(conn: apsw.Connection) -> None:
            gate.wait(5)  # hold the writer so the next units land in one batch
            conn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")

        def dup(conn: apsw.Connection) -> None:
            conn.execute("INSERT INTO kv (k, v) VALUES ('b', 2)")
            conn.execute("INSERT INTO kv (k, v) VALUES ('a', 3)")  # conflicts with slow

        def fine(conn: apsw.Connection) -> None:
            conn.execute("INSERT INTO kv (k, v) VALUES ('c', 4)")

        first = writer.submit(slow)
        second, third = writer.submit(dup), writer.submit(fine)
        gate.set()
        first.result(5)
        with pytest.raises(apsw.ConstraintError):
            second.result(5)
        third.result(5)
    finally:
        writer.close()
    check = open_connection(DbConfig(tmp_path / "s.db"))
    assert sorted(check.execute("SELECT k, v FROM kv")) == [("a", 1), ("c", 4)]


def test_busy_past_the_timeout_is_retryable(tmp_path: Path) -> None:
    cfg = DbConfig(tmp_path / "b.db", busy_timeout_ms=50)
    holder = open_connection(cfg)
    migrate(holder, MIGRATIONS)
    holder.execute("BEGIN IMMEDIATE")
    try:
        writer = Writer(cfg)
        try:
            with pytest.raises(StorageError) as info:
                writer.run_sync(lambda c: c.execute("INSERT INTO kv VALUES ('x', 1, NULL)"), 5)
            assert info.value.fault is StorageFault.BUSY
            assert info.value.retryable
        finally:
            writer.close()
    finally:
        holder.execute("ROLLBACK")


def test_writer_is_shared_safely_by_threads(tmp_path: Path) -> None:
    stats: list[BatchStats] = []
    writer = Writer(DbConfig(tmp_path / "th.db"), MIGRATIONS, on_batch=stats.append)

    def work(t: int) -> None:
        for i in range(100):
            key = f"t{t}-{i}"

            def insert(conn: apsw.Connection, key: str = key) -> None:
                conn.execute("INSERT INTO kv (k, v) VALUES (?, 1)", (key,))

            writer.run_sync(insert, 10)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    writer.close()
    assert sum(s.units for s in stats) == 800
    assert len(stats) < 800, "units from different threads share commits"
    check = open_connection(DbConfig(tmp_path / "th.db"))
    assert check.execute("SELECT count(*) FROM kv").fetchall() == [(800,)]
