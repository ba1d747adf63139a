"""How the group-commit writer answers coroutines: every waiter of a batch on the same
event loop in one hand-off, failures to their own caller only, cancelled callers skipped,
and each loop answered on its own loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from engine.sqlite import BatchStats, DbConfig, Writer, open_connection

MIGRATIONS = ("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",)


def _insert(k: str, v: int) -> Callable[[apsw.Connection], int]:
    def unit(conn: apsw.Connection) -> int:
        conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (k, v))
        return v

    return unit


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = open_connection(DbConfig(path))
    try:
        return sorted(conn.execute("SELECT k, v FROM kv"))
    finally:
        conn.close()


async def test_a_failing_unit_fails_only_its_own_coroutine(tmp_path: Path) -> None:
    writer = Writer(DbConfig(tmp_path / "f.db"), MIGRATIONS)
    gate = threading.Event()

    holding = threading.Event()

    def hold(conn: apsw.Connection) -> None:
        holding.set()
        gate.wait(5)  # keep the writer busy so the next three share one batch
        conn.execute("INSERT INTO kv (k, v) VALUES ('a', 1)")

    try:
        first = asyncio.ensure_future(writer.run(hold))
        assert await asyncio.to_thread(holding.wait, 5)  # its batch has begun
        others = asyncio.gather(
            writer.run(_insert("b", 2)),
            writer.run(_insert("a", 3)),
            writer.run(_insert("c", 4)),
            return_exceptions=True,
        )
        gate.set()
        await first
        b, dup, c = await others
    finally:
        writer.close()
    assert (b, c) == (2, 4)
    assert isinstance(dup, apsw.ConstraintError)
    assert _rows(tmp_path / "f.db") == [("a", 1), ("b", 2), ("c", 4)]


async def test_a_coroutine_cancelled_before_its_batch_is_skipped(tmp_path: Path) -> None:
    stats: list[BatchStats] = []
    writer = Writer(DbConfig(tmp_path / "c.db"), MIGRATIONS, on_batch=stats.append)
    gate = threading.Event()

    holding = threading.Event()

    def hold(conn: apsw.Connection) -> None:
        holding.set()
        gate.wait(5)

    try:
        first = asyncio.ensure_future(writer.run(hold))
        assert await asyncio.to_thread(holding.wait, 5)  # its batch has begun
        doomed = asyncio.ensure_future(writer.run(_insert("x", 1)))
        await asyncio.sleep(0)  # queued behind `hold`
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        gate.set()
        await first
        assert await writer.run(_insert("y", 2)) == 2
    finally:
        writer.close()
    assert _rows(tmp_path / "c.db") == [("y", 2)]
    assert sum(s.units for s in stats) == 2  # hold and y: x never ran


def test_each_event_loop_is_answered_on_its_own_loop(tmp_path: Path) -> None:
    writer = Writer(DbConfig(tmp_path / "l.db"), MIGRATIONS)
    answers: dict[int, list[int]] = {}

    def loop_thread(t: int) -> None:
        async def main() -> list[int]:
            units = [writer.run(_insert(f"t{t}-{i}", i)) for i in range(50)]
            return list(await asyncio.gather(*units))

        answers[t] = asyncio.run(main())

    threads = [threading.Thread(target=loop_thread, args=(t,)) for t in range(4)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
    finally:
        writer.close()
    assert answers == {t: list(range(50)) for t in range(4)}
    assert len(_rows(tmp_path / "l.db")) == 200
