"""Processes opening a new SQLite file at the same moment all get it: `saga up` starts
the gateway and the daemon on one new saga log, and a gateway's workers start together."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from engine.sqlite import DbConfig, open_connection

PROCESSES = 4
TRIES = 40


def _open(path: Path, barrier: Barrier) -> None:
    barrier.wait()
    open_connection(DbConfig(path)).close()  # raises (exit 1) if it cannot


def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    # Each finds the new file in rollback mode and switches it to WAL; SQLite answers all
    # but one of the switches BUSY at once, without the busy handler (docs/architecture.md,
    # One owner for SQLite).
    ctx = multiprocessing.get_context("fork")
    failed = []
    for i in range(TRIES):
        path = tmp_path / f"{i}.db"
        barrier = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_open, args=(path, barrier)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        failed += [(i, p.exitcode) for p in procs if p.exitcode != 0]
    assert not failed, failed
