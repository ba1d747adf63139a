"""The DBOS Transact baseline: the same three no-op steps as one DBOS workflow, on DBOS's
SQLite system database, at the same concurrency.

Each measurement runs in a child process (`python -m bench.dbos_baseline ...`): DBOS is a
process-wide singleton with background threads of its own, which must neither share the
interpreter with the engine's measurements nor carry state from one run to the next.
The child prints one JSON line; the parent turns it into a `DbosRun`. When DBOS is missing
(it comes only with the `bench` extra) or cannot start, the parent says why instead of
failing the whole benchmark.

The baseline is DBOS at its best here, so that a ratio against it flatters nobody:
- journal: DBOS sets no journal mode, so its file keeps SQLite's rollback journal (about
  90 workflows/s on this machine). The child puts the file in WAL mode before DBOS opens
  it, as the engine's log is; both then run SQLite's default `synchronous=FULL`, which
  neither DBOS nor Python's sqlite3 changes: the same durability as the engine's log.
- API: plain (sync) workflows called from a pool of N threads beat the asyncio API
  (`start_workflow_async` + `get_result`) at every concurrency measured here.
Both choices can be switched (`--dbos-journal`, `--dbos-api`) to reproduce the others.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["DbosApi", "DbosJournal", "DbosRun", "available", "run_dbos", "version"]

AsyncWorkflow = Callable[[int], Coroutine[Any, Any, int]]
SyncWorkflow = Callable[[int], int]


class DbosApi(StrEnum):
    THREADS = "threads"  # sync workflows, called from a pool of N threads
    ASYNC = "async"  # async workflows: start_workflow_async, then get_result


class DbosJournal(StrEnum):
    WAL = "wal"  # as the engine's log
    DEFAULT = "default"  # what DBOS leaves: SQLite's rollback journal


@dataclass(frozen=True, slots=True)
class DbosRun:
    seconds: float | None  # None: the run failed, and `error` says how
    sagas: int
    error: str | None = None


def version() -> str | None:
    try:
        return importlib.metadata.version("dbos")
    except importlib.metadata.PackageNotFoundError:
        return None


def available() -> str | None:
    """None when DBOS can be tried; otherwise why not, in one line."""
    if importlib.util.find_spec("dbos") is None:
        return "DBOS is not installed (it comes with the bench extra: pip install -e '.[bench]')"
    return None


def run_dbos(
    data_dir: Path,
    *,
    concurrency: int,
    sagas: int,
    timeout_s: float,
    api: DbosApi = DbosApi.THREADS,
    journal: DbosJournal = DbosJournal.WAL,
) -> DbosRun:
    """One measurement in a fresh child process, on a fresh SQLite file in `data_dir`."""
    cmd = [
        sys.executable,
        "-m",
        "bench.dbos_baseline",
        "--db",
        str(data_dir / "dbos.sqlite"),
        "--concurrency",
        str(concurrency),
        "--sagas",
        str(sagas),
        "--api",
        api.value,
        "--journal",
        journal.value,
    ]
    try:
        done = subprocess.run(
            cmd, cwd=data_dir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return DbosRun(None, sagas, f"timed out after {timeout_s:.0f}s")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return DbosRun(None, sagas, f"exit {done.returncode}: {tail}")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        return DbosRun(float(answer["seconds"]), int(answer["sagas"]))
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        return DbosRun(None, sagas, f"unreadable answer from the DBOS child: {exc}")


# ---- the child process ------------------------------------------------------------------


def _register_async() -> AsyncWorkflow:
    """Three no-op steps in one async workflow, registered with DBOS (before launch)."""
    from dbos import DBOS

    async def first() -> None:
        return None

    async def second() -> None:
        return None

    async def third() -> None:
        return None

    # Decorators applied as calls: the module must type-check without DBOS installed too.
    steps: list[Callable[[], Awaitable[None]]] = [
        DBOS.step(name="step1")(first),
        DBOS.step(name="step2")(second),
        DBOS.step(name="step3")(third),
    ]

    async def saga(i: int) -> int:
        for step in steps:
            await step()
        return i

    workflow: AsyncWorkflow = DBOS.workflow(name="saga3_async")(saga)
    return workflow


def _register_sync() -> SyncWorkflow:
    """The same workflow with plain functions, for DBOS's thread-based API."""
    from dbos import DBOS

    def first() -> None:
        return None

    def second() -> None:
        return None

    def third() -> None:
        return None

    steps: list[Callable[[], None]] = [
        DBOS.step(name="sync_step1")(first),
        DBOS.step(name="sync_step2")(second),
        DBOS.step(name="sync_step3")(third),
    ]

    def saga(i: int) -> int:
        for step in steps:
            step()
        return i

    workflow: SyncWorkflow = DBOS.workflow(name="saga3_sync")(saga)
    return workflow


async def _drive_async(workflow: AsyncWorkflow, concurrency: int, sagas: int) -> float:
    """Keep `concurrency` workflows in flight (each started, then awaited to its result)
    until `sagas` have finished; the wall time of that."""
    from dbos import DBOS

    todo = iter(range(sagas))

    async def worker() -> None:
        for i in todo:
            handle = await DBOS.start_workflow_async(workflow, i)
            await handle.get_result()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def _drive_threads(workflow: SyncWorkflow, concurrency: int, sagas: int) -> float:
    """N threads, each running one workflow to its end and then the next."""
    with ThreadPoolExecutor(concurrency, thread_name_prefix="dbos-bench") as pool:
        started = time.perf_counter()
        results = list(pool.map(workflow, range(sagas)))
        seconds = time.perf_counter() - started
    if results != list(range(sagas)):
        raise SystemExit("DBOS workflows returned wrong results")
    return seconds


def _child(
    db: Path, concurrency: int, sagas: int, api: DbosApi, journal: DbosJournal
) -> dict[str, float | int | str]:
    from dbos import DBOS

    if journal is DbosJournal.WAL:  # persistent in the file: DBOS's connections inherit it
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    async_workflow = _register_async() if api is DbosApi.ASYNC else None
    sync_workflow = _register_sync() if api is DbosApi.THREADS else None
    DBOS(
        config={
            "name": "saga-bench",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        if async_workflow is not None:
            seconds = asyncio.run(_drive_async(async_workflow, concurrency, sagas))
        else:
            assert sync_workflow is not None
            seconds = _drive_threads(sync_workflow, concurrency, sagas)
    finally:
        DBOS.destroy()
    # Trust but verify: every workflow is recorded as a success in DBOS's own tables, on
    # the journal we meant to measure.
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'")
        succeeded = int(row.fetchone()[0])
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    if succeeded != sagas:
        raise SystemExit(f"DBOS recorded {succeeded} successful workflows of {sagas}")
    return {"seconds": seconds, "sagas": sagas, "journal_mode": mode}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_baseline")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--sagas", type=int, required=True)
    parser.add_argument("--api", type=DbosApi, default=DbosApi.THREADS)
    parser.add_argument("--journal", type=DbosJournal, default=DbosJournal.WAL)
    args = parser.parse_args(argv)
    answer = _child(args.db, args.concurrency, args.sagas, args.api, args.journal)
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
