"""The DBOS Transact baseline: the same three no-op steps as one DBOS workflow, on DBOS's
SQLite system database, at the same concurrency.

Each measurement runs in a child process (`python -m bench.dbos_baseline ...`): DBOS is a
process-wide singleton with background threads of its own, which must neither share the
interpreter with the engine's measurements nor carry state from one run to the next.
The child prints one JSON line; the parent turns it into a `Run`. When DBOS is missing
(it comes only with the `bench` extra) or cannot start, the parent says why instead of
failing the whole benchmark.

DBOS configures SQLite itself: its default rollback journal and SQLite's default
`synchronous=FULL` (it sets no pragma for either), so every workflow start, step output
and status change is its own durable transaction.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DbosRun", "available", "run_dbos", "version"]

Workflow = Callable[[int], Coroutine[Any, Any, int]]


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


def run_dbos(data_dir: Path, *, concurrency: int, sagas: int, timeout_s: float) -> DbosRun:
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


def _register() -> Workflow:
    """Three no-op steps in one workflow, registered with DBOS (before launch)."""
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

    workflow: Workflow = DBOS.workflow(name="saga3")(saga)
    return workflow


async def _drive(workflow: Workflow, concurrency: int, sagas: int) -> float:
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


def _child(db: Path, concurrency: int, sagas: int) -> dict[str, float | int]:
    from dbos import DBOS

    workflow = _register()
    DBOS(
        config={
            "name": "saga-bench",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        seconds = asyncio.run(_drive(workflow, concurrency, sagas))
    finally:
        DBOS.destroy()
    # Trust but verify: every workflow is recorded as a success in DBOS's own tables.
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'")
        succeeded = int(row.fetchone()[0])
    if succeeded != sagas:
        raise SystemExit(f"DBOS recorded {succeeded} successful workflows of {sagas}")
    return {"seconds": seconds, "sagas": sagas}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_baseline")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--sagas", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(_child(args.db, args.concurrency, args.sagas)), flush=True)


if __name__ == "__main__":
    main()
