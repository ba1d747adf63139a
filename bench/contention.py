"""`python -m bench contention`: several processes writing one saga log at once.

The gateway, the recovery daemon and the operator's `saga retry/cancel/prune` each have
their own writer on the same SQLite file, and SQLite's write lock has no queue (see
`engine/sqlite.py`, FAIR_AFTER_S). This measures what that costs: each process creates
sagas from `writers` coroutines as fast as its group commit allows, for `duration`
seconds; first one process alone (the baseline, same run), then `processes` at once.
Reported per process: commits, commit latency p50/p99/max, and its share of the total.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.report import fmt_ms, fmt_num, fmt_ratio, machine, markdown_table, median, write_outputs

__all__ = ["ContentionReport", "ContentionSettings", "run"]

HEADER = (
    "processes",
    "process",
    "commits/s",
    "p50 (ms)",
    "p99 (ms)",
    "max (ms)",
    "share",
    "total vs alone",
    "max vs alone",
)


@dataclass(frozen=True, slots=True)
class ContentionSettings:
    reps: int = 3
    processes: int = 2
    writers: int = 16
    duration_s: float = 8.0
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench contention"

    @classmethod
    def quick(cls) -> ContentionSettings:
        return cls(reps=1, writers=4, duration_s=1.0)


@dataclass(frozen=True, slots=True)
class Worker:
    """One process's numbers (what `python -m bench.contention` prints as JSON)."""

    commits: int
    seconds: float
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Run:
    rep: int
    processes: int
    workers: tuple[Worker, ...] = field(default_factory=tuple)
    error: str | None = None


# ---- one writing process ------------------------------------------------------------------


async def _write(path: Path, writers: int, duration_s: float) -> Worker:
    from engine.saga_log import NewSaga
    from engine.sqlite import DbConfig
    from engine.sqlite_log import SqliteSagaLog

    log = SqliteSagaLog.open(DbConfig(path))
    latencies: list[float] = []
    errors = 0
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    end = started + duration_s

    async def writer(w: int) -> None:
        nonlocal errors
        i = 0
        while time.monotonic() < end:
            i += 1
            new = NewSaga(f"{tag}-{w}-{i}", "bench", b"{}")
            t = time.perf_counter()
            try:
                await log.create(new, owner="bench", lease_expires_ms=0, now_ms=1)
            except Exception:  # a commit that failed (busy timeout): counted, not fatal
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)

    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
    finally:
        await log.close()
    latencies.sort()

    def q(p: float) -> float | None:
        return latencies[int(p * (len(latencies) - 1))] if latencies else None

    return Worker(
        len(latencies),
        time.monotonic() - started,
        q(0.5),
        q(0.99),
        latencies[-1] if latencies else None,
        errors,
    )


def worker_main(argv: Sequence[str]) -> None:
    path, writers, duration = Path(argv[0]), int(argv[1]), float(argv[2])
    print(json.dumps(asdict(asyncio.run(_write(path, writers, duration)))))


# ---- the benchmark --------------------------------------------------------------------------


def _measure(rep: int, processes: int, settings: ContentionSettings, folder: Path) -> Run:
    path = folder / "saga.db"
    from engine.sqlite import DbConfig
    from engine.sqlite_log import SqliteSagaLog

    SqliteSagaLog.open(DbConfig(path)).close_sync()  # migrated before the race starts
    args = [str(path), str(settings.writers), str(settings.duration_s)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.contention", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    workers = []
    for proc in procs:
        out, err = proc.communicate(timeout=settings.duration_s + 120)
        if proc.returncode != 0:
            return Run(rep, processes, error=(err or out).strip()[-500:])
        workers.append(Worker(**json.loads(out)))
    return Run(rep, processes, tuple(workers))


def render(settings: ContentionSettings, runs: Sequence[Run], info: dict[str, str]) -> str:
    ok = [r for r in runs if r.error is None]
    alone = [r.workers[0] for r in ok if r.processes == 1]
    alone_rate = median(w.rate for w in alone)
    alone_max = median(w.max_s for w in alone if w.max_s is not None)
    rows: list[list[str]] = []
    for r in ok:
        total = sum(w.rate for w in r.workers)
        for i, w in enumerate(r.workers, 1):
            rows.append(
                [
                    f"{r.processes} (rep {r.rep})",
                    str(i),
                    fmt_num(w.rate),
                    fmt_ms(w.p50_s),
                    fmt_ms(w.p99_s),
                    fmt_ms(w.max_s),
                    f"{w.rate / total:.0%}" if total else "-",
                    fmt_ratio(total / alone_rate if alone_rate else None),
                    fmt_ratio(w.max_s / alone_max if alone_max and w.max_s else None),
                ]
            )
    parts = [
        f"`{settings.command}`: {settings.writers} writers per process, "
        f"{settings.duration_s:g} s per measurement, {settings.reps} rep(s). Each commit is "
        "one saga created (`SqliteSagaLog.create`, synchronous=FULL); ratios are against "
        "one process alone in the same run.",
        "",
        markdown_table(HEADER, rows),
    ]
    for r in runs:
        if r.error:
            parts += ["", f"{r.processes} processes, rep {r.rep} failed: `{r.error}`"]
    errors = sum(w.errors for r in ok for w in r.workers)
    if errors:
        parts += ["", f"{errors} commits failed (busy timeout) across all runs."]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class ContentionReport:
    settings: ContentionSettings
    runs: tuple[Run, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def run(settings: ContentionSettings, progress: Callable[[str], None]) -> ContentionReport:
    runs: list[Run] = []
    for rep in range(1, settings.reps + 1):
        for processes in (1, settings.processes):
            with tempfile.TemporaryDirectory(dir=settings.data_dir) as tmp:
                got = _measure(rep, processes, settings, Path(tmp))
            runs.append(got)
            what = got.error or ", ".join(
                f"{fmt_num(w.rate)}/s max {fmt_ms(w.max_s)} ms" for w in got.workers
            )
            progress(f"rep {rep}/{settings.reps}  {processes} process(es): {what}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir)
    markdown = render(settings, runs, info)
    files = write_outputs(
        settings.out,
        "contention",
        markdown,
        settings={k: str(v) for k, v in asdict(settings).items()},
        machine=info,
        runs=[asdict(r) for r in runs],
        data_dir=data_dir,
    )
    return ContentionReport(settings, tuple(runs), markdown, tuple(files))


if __name__ == "__main__":
    worker_main(sys.argv[1:])
