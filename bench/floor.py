"""What a gRPC call costs a server before any work of its own: the floor under the
services' CPU per call, measured beside the real payment service in the same run.

The same client workload, `calls` Payment.Charge calls from `concurrency` coroutines of
a grpc.aio client on uvloop in this process (bench/cost.py's `charges`), against each of
these servers, each a fresh process, in a rotating order within each repetition so that
a neighbour's burst of work lands on every kind alike:

- `noop-aio`: a grpc.aio server on uvloop that answers with a fixed reply at once
  (bench/noop_server.py), the services' own stack without their work;
- `noop-sync`: grpc's synchronous server doing the same on a thread pool, once per pool
  size in `sync_workers`; the pool size with the lowest median is the row;
- `payment`: `saga service payment` on its SQLite ledger, FULL durability.

Each figure is the server's CPU (its process tree's user + system time, bench/measure.py)
over the calls ÷ calls, after a warm-up; the client's own CPU (this process) over the
same calls is what a gateway pays on its side of each call.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench.cost import charges
from bench.measure import tree_cpu_times
from bench.report import fmt_num, fmt_ratio, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from engine import event_loop
from saga.children import Child, base_env
from saga.probes import free_port, grpc_serving

__all__ = ["KINDS", "FloorReport", "FloorSettings", "run"]

KINDS: Final = ("noop-aio", "noop-sync", "payment")
WARM_CALLS: Final = 300  # connection set-up, first allocations, the ledger's first pages


@dataclass(frozen=True, slots=True)
class FloorSettings:
    reps: int = 3
    concurrency: int = 64
    calls: int = 10_000
    # Pool sizes of the synchronous server; the best is its row (see the module).
    sync_workers: tuple[int, ...] = (4, 16)
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench floor"

    @classmethod
    def quick(cls) -> FloorSettings:
        # Enough calls that each server's CPU spans several clock ticks (10 ms each).
        return cls(reps=1, concurrency=16, calls=1000, sync_workers=(4,))


@dataclass(frozen=True, slots=True)
class FloorReport:
    markdown: str
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One server measured once: CPU per call, its share in user mode, the client's."""

    kind: str
    workers: int | None  # noop-sync's pool size
    us_per_call: float
    user_share: float
    client_us_per_call: float


@dataclass
class _Rep:
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Cell:
    kind: str
    workers: int | None = None

    @property
    def label(self) -> str:
        return self.kind if self.workers is None else f"{self.kind} ({_threads(self.workers)})"


def _threads(workers: int) -> str:
    return f"{workers} thread" + ("s" if workers != 1 else "")


@contextmanager
def _server(cell: _Cell, root: Path) -> Iterator[tuple[str, int]]:
    """Start the cell's server, fresh; yields (its address, its pid); kills it after."""
    if cell.kind == "payment":
        with BenchStack(root, redis=False) as stack:
            child = stack.start_service("payment")
            yield stack.env["PAYMENT_SERVICE_ADDR"], child.pid
        return
    addr = f"127.0.0.1:{free_port()}"
    mode = cell.kind.removeprefix("noop-")
    argv = [sys.executable, "-m", "bench.noop_server", "--mode", mode, "--addr", addr]
    argv += ["--workers", str(cell.workers or 1)]
    child = Child.spawn(cell.kind, argv, base_env(), log_path=root / f"{cell.kind}.log")
    try:
        child.wait_ready(functools.partial(grpc_serving, addr))
        yield addr, child.pid
    finally:
        child.kill()


def _measure(settings: FloorSettings, cell: _Cell, root: Path) -> Sample:
    with _server(cell, root) as (addr, pid):
        event_loop.run(charges(addr, min(WARM_CALLS, settings.calls), settings.concurrency))
        before, client0 = tree_cpu_times(pid), time.process_time()
        event_loop.run(charges(addr, settings.calls, settings.concurrency))
        client = time.process_time() - client0
        spent = tree_cpu_times(pid) - before
    return Sample(
        kind=cell.kind,
        workers=cell.workers,
        us_per_call=1e6 * spent.total / settings.calls,
        user_share=spent.user / spent.total if spent.total > 0 else float("nan"),
        client_us_per_call=1e6 * client / settings.calls,
    )


def _cells(settings: FloorSettings, rep: int) -> list[_Cell]:
    """Every server of one repetition, the order rotated by one per repetition."""
    cells = [_Cell("noop-aio"), *(_Cell("noop-sync", w) for w in settings.sync_workers)]
    cells.append(_Cell("payment"))
    shift = rep % len(cells)
    return cells[shift:] + cells[:shift]


def _of(reps: list[_Rep], kind: str, workers: int | None = None) -> list[Sample]:
    """Each repetition's sample of one server (in repetition order)."""
    return [s for r in reps for s in r.samples if s.kind == kind and s.workers == workers]


def _best_sync(reps: list[_Rep], settings: FloorSettings) -> int:
    """The pool size whose median CPU per call is the lowest."""

    def cost(workers: int) -> float:
        m = median(s.us_per_call for s in _of(reps, "noop-sync", workers))
        return float("inf") if m is None else m

    return min(settings.sync_workers, key=cost)


def _markdown(settings: FloorSettings, reps: list[_Rep], load: str) -> str:
    best = _best_sync(reps, settings)
    base = _of(reps, "noop-aio")
    pools = ", ".join(str(w) for w in settings.sync_workers)
    what = {
        "noop-aio": "grpc.aio on uvloop, fixed reply",
        "noop-sync": f"grpc.server, {_threads(best)} (best of {pools}), fixed reply",
        "payment": "`saga service payment`, SQLite ledger, FULL",
    }
    rows, client = [], []
    for kind in KINDS:
        samples = _of(reps, kind, best if kind == "noop-sync" else None)
        ratios = [s.us_per_call / b.us_per_call for s, b in zip(samples, base, strict=True)]
        rows.append([
            kind, what[kind],
            " / ".join(fmt_num(s.us_per_call) for s in samples),
            f"**{fmt_num(median(s.us_per_call for s in samples))}**",
            fmt_num(_pct(median(s.user_share for s in samples))),
            fmt_ratio(median(ratios)),
        ])  # fmt: skip
        client.append(f"{fmt_num(median(s.client_us_per_call for s in samples))} against {kind}")
    others = [
        f"{_threads(w)} {fmt_num(median(s.us_per_call for s in _of(reps, 'noop-sync', w)))}"
        for w in settings.sync_workers
    ]
    header = ("server", "what", "CPU µs per call (each rep)", "median", "user %", "vs noop-aio")
    return "\n".join([
        "## What a gRPC call costs the server",
        "",
        f"`{settings.command}`: {settings.calls:,} Payment.Charge calls from "
        f"{settings.concurrency} coroutines of a grpc.aio client on uvloop, per server, each "
        f"server a fresh process, after {WARM_CALLS} warm-up calls; the server's CPU (user + "
        f"system, its process tree) ÷ calls. Load average at the start: {load}.",
        "",
        markdown_table(header, rows),
        "",
        "vs noop-aio: the median of each repetition's ratio. noop-sync by pool size, median "
        f"µs per call: {', '.join(others)}.",
        "",
        f"The client (this process) per call, µs of CPU (median): {', '.join(client)}.",
        "",
    ])  # fmt: skip


def _pct(share: float | None) -> float | None:
    return None if share is None else 100 * share


def run(settings: FloorSettings, progress: Callable[[str], None]) -> FloorReport:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    reps: list[_Rep] = []
    for i in range(settings.reps):
        rep = _Rep()
        for cell in _cells(settings, i):
            with tempfile.TemporaryDirectory(prefix="saga-floor-", dir=settings.data_dir) as tmp:
                rep.samples.append(_measure(settings, cell, Path(tmp)))
        reps.append(rep)
        by_cell = {
            _Cell(s.kind, s.workers).label: s.us_per_call
            for s in sorted(rep.samples, key=lambda s: KINDS.index(s.kind))
        }
        cells = ", ".join(f"{label} {v:.0f}" for label, v in by_cell.items())
        progress(f"rep {i + 1}/{settings.reps}: server CPU µs/call: {cells}")
    markdown = _markdown(settings, reps, load)
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    files = write_outputs(
        settings.out, "floor", markdown,
        settings={k: str(v) for k, v in asdict(settings).items()},
        machine=machine(data_dir, {"load average at start": load}),
        runs=[asdict(r) for r in reps],
        data_dir=data_dir,
    )  # fmt: skip
    return FloorReport(markdown, tuple(files))
