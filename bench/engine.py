"""The engine benchmark: sagas of three no-op steps through the durable log, beside the
same sagas on the in-memory log and the same workflow on DBOS, in one run.

What one measurement does (a fresh database file in a fresh temp folder every time):
- a `Runner` (capacity = the concurrency, no claim pump: nothing is queued, and the
  pump's scans are recovery's cost, not the saga path's) drives sagas of three steps
  (compensatable, compensatable, pivot) whose actions return `Done()` at once;
- N workers each start a saga, wait until its terminal status is durable, and start the
  next, so exactly N sagas are in flight until the fixed count has finished;
- the wall time from the first start to the last durable COMPLETED is the measurement.

Every backend is measured at every concurrency in every repetition, interleaved, so a
slow moment of the machine falls on all of them; tables show medians over repetitions,
and ratios are medians of the ratios within each repetition.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench import dbos_baseline
from bench.dbos_baseline import DbosApi, DbosJournal
from bench.errors import BenchError
from bench.pg import DEFAULT_PG_URL, fresh_database
from bench.report import (
    Series,
    fmt_ms,
    fmt_num,
    fmt_ratio,
    machine,
    markdown_table,
    median,
    percentile,
    write_chart,
    write_outputs,
)
from bench.watched_log import WatchedLog
from engine.core import SagaStatus
from engine.definition import Done, SagaDefinition, Step, StepContext, StepKind, StepResult
from engine.errors import EngineError
from engine.log_settings import SagaLogSettings, open_saga_log
from engine.memory_log import MemorySagaLog
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga, SagaLog
from engine.sqlite import BatchStats, DbConfig, Synchronous
from engine.sqlite_log import SqliteSagaLog

__all__ = [
    "Backend",
    "EngineBenchSettings",
    "EngineReport",
    "Row",
    "Run",
    "run",
    "summarize",
]

DEFINITION: Final = "bench3"
STEPS: Final = 3
PAYLOAD: Final = b'{"order_id": "bench", "amount_cents": 1999}'
# The durable engine should do at least this many times DBOS's rate at this concurrency.
TARGET_RATIO: Final = 20.0
TARGET_CONCURRENCY: Final = 64
# The team's reference figure: DBOS on SQLite, three-step workflows, this 2-core machine.
DBOS_REFERENCE_PER_S: Final = 260.0
DEADLINE_S: Final = 120.0


class Backend(StrEnum):
    DURABLE = "engine, SQLite (FULL)"
    POSTGRES = "engine, PostgreSQL"
    MEMORY = "engine, in-memory"
    DBOS = "DBOS, SQLite"


@dataclass(frozen=True, slots=True)
class EngineBenchSettings:
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    sagas: int = 2000  # per engine measurement
    dbos_sagas: int = 400  # per DBOS measurement: DBOS is ~20x slower, the rate is what counts
    reps: int = 3
    dbos: bool = True
    postgres: bool = False  # a PostgreSQL log too, on a fresh database per measurement
    pg_url: str = DEFAULT_PG_URL  # the server (and role) that makes those databases
    dbos_api: DbosApi = DbosApi.THREADS  # DBOS at its best here (bench/dbos_baseline.py)
    dbos_journal: DbosJournal = DbosJournal.WAL
    chart: bool = True
    out: Path = Path("bench/out")
    data_dir: Path | None = None  # where the temp folders go (None: the system's temp dir)
    command: str = "python -m bench engine"

    @classmethod
    def quick(cls) -> EngineBenchSettings:
        """A smoke run: completes in seconds, proves the harness, measures nothing."""
        return cls(concurrencies=(1, 16), sagas=40, dbos_sagas=8, reps=1)


@dataclass(frozen=True, slots=True)
class Run:
    """One measurement of one backend at one concurrency in one repetition."""

    backend: Backend
    concurrency: int
    rep: int
    sagas: int
    seconds: float | None  # None: failed (see error)
    transitions: int | None = None
    commits: int | None = None  # group commits during the measurement (durable log only)
    units: int | None = None  # writes (create/append/renew) inside those commits
    overhead_p50_s: float | None = None
    overhead_p99_s: float | None = None
    error: str | None = None

    @property
    def rate(self) -> float | None:
        return None if self.seconds is None else self.sagas / self.seconds


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over repetitions for one backend at one concurrency."""

    backend: Backend
    concurrency: int
    sagas_per_s: float | None
    transitions_per_s: float | None
    transitions_per_commit: float | None
    units_per_commit: float | None
    commits_per_saga: float | None
    overhead_p50_s: float | None
    overhead_p99_s: float | None
    vs_memory: float | None
    vs_dbos: float | None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineReport:
    settings: EngineBenchSettings
    runs: tuple[Run, ...]
    rows: tuple[Row, ...]
    markdown: str
    files: tuple[Path, ...] = field(default=())


# ---- one measurement of the engine --------------------------------------------------------


def _definition(watched: WatchedLog) -> SagaDefinition:
    async def noop(ctx: StepContext) -> StepResult:
        started = time.perf_counter()
        result = Done()
        watched.action_took(ctx.saga_id, ctx.step, ctx.attempt, time.perf_counter() - started)
        return result

    kinds = (StepKind.COMPENSATABLE, StepKind.COMPENSATABLE, StepKind.PIVOT)
    steps = tuple(Step(f"step{i + 1}", noop, noop, kind=k) for i, k in enumerate(kinds))
    return SagaDefinition(DEFINITION, steps)


async def _drive(runner: Runner, watched: WatchedLog, concurrency: int, sagas: int) -> float:
    todo = iter(range(sagas))

    async def worker() -> None:
        for i in todo:  # one iterator shared by all workers: each saga is taken once
            saga_id = f"bench-{i:07d}"
            created = await runner.start_saga(NewSaga(saga_id, DEFINITION, PAYLOAD))
            if created.queued:  # for a pump that is not running
                raise BenchError(f"{saga_id} was queued instead of driven: runner full")
            await watched.finished(saga_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _measure_engine(
    backend: Backend,
    concurrency: int,
    rep: int,
    sagas: int,
    data_dir: Path,
    database_url: str | None = None,
) -> Run:
    batches: list[BatchStats] = []  # appended by the writer thread: list.append is atomic
    inner: SagaLog
    if backend is Backend.DURABLE:
        cfg = DbConfig(data_dir / "saga.db", synchronous=Synchronous.FULL)
        inner = SqliteSagaLog.open(cfg, on_batch=batches.append)
    elif backend is Backend.POSTGRES:
        assert database_url is not None
        log_settings = SagaLogSettings.from_env({"SAGA_DATABASE_URL": database_url})
        inner = await open_saga_log(log_settings, on_batch=batches.append)
    else:
        inner = MemorySagaLog()
    watched = WatchedLog(inner)
    # A saga keeps its runner slot for a moment after its terminal status is durable
    # (its task is still returning); room for twice the concurrency means the next
    # saga never finds the runner full and gets queued instead of driven.
    settings = RunnerSettings(owner="bench", capacity=2 * concurrency, claim=False)
    runner = Runner(watched, [_definition(watched)], settings)
    await runner.start()
    try:
        async with asyncio.timeout(DEADLINE_S + sagas / 20):  # hang → error, never forever
            seconds = await _drive(runner, watched, concurrency, sagas)
        window = batches[:]
        counts = await watched.count_by_status()
    finally:
        await runner.stop()
        await watched.close()
    durable = backend in (Backend.DURABLE, Backend.POSTGRES)
    run = Run(
        backend,
        concurrency,
        rep,
        sagas,
        seconds,
        transitions=watched.written,
        commits=len(window) if durable else None,
        units=sum(b.units for b in window) if durable else None,
        overhead_p50_s=percentile(watched.overheads, 50),
        overhead_p99_s=percentile(watched.overheads, 99),
    )
    if counts[SagaStatus.COMPLETED] != sagas:  # a fast wrong answer is no answer
        return replace(run, seconds=None, error=f"only {counts} of {sagas} sagas completed")
    return run


def _measure(backend: Backend, concurrency: int, rep: int, settings: EngineBenchSettings) -> Run:
    gc.collect()  # the previous measurement's garbage is not this one's cost
    with tempfile.TemporaryDirectory(prefix="saga-bench-", dir=settings.data_dir) as tmp:
        if backend is Backend.DBOS:
            got = dbos_baseline.run_dbos(
                Path(tmp),
                concurrency=concurrency,
                sagas=settings.dbos_sagas,
                timeout_s=60 + settings.dbos_sagas / 5,
                api=settings.dbos_api,
                journal=settings.dbos_journal,
            )
            return Run(backend, concurrency, rep, got.sagas, got.seconds, error=got.error)
        sagas = settings.sagas
        if backend is Backend.POSTGRES:
            try:
                with fresh_database(settings.pg_url) as url:
                    return asyncio.run(
                        _measure_engine(backend, concurrency, rep, sagas, Path(tmp), url)
                    )
            except (BenchError, EngineError, OSError) as exc:  # the server: say so, go on
                return Run(backend, concurrency, rep, sagas, None, error=str(exc)[:300])
        return asyncio.run(_measure_engine(backend, concurrency, rep, sagas, Path(tmp)))


# ---- summary ----------------------------------------------------------------------------


def _ratio(runs: Sequence[Run], of: Run, to: Backend) -> float | None:
    """`of`'s rate over `to`'s in the same repetition at the same concurrency."""
    for other in runs:
        if other.backend is to and other.concurrency == of.concurrency and other.rep == of.rep:
            if of.rate is None or other.rate is None:
                return None
            return of.rate / other.rate
    return None


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def summarize(runs: Sequence[Run]) -> tuple[Row, ...]:
    rows: list[Row] = []
    for backend in Backend:
        for concurrency in sorted({r.concurrency for r in runs if r.backend is backend}):
            mine = [r for r in runs if r.backend is backend and r.concurrency == concurrency]
            ok = [r for r in mine if r.seconds is not None]
            rates = [r.rate for r in ok]
            tps = [r.transitions / r.seconds for r in ok if r.transitions and r.seconds]
            tpc = [r.transitions / r.commits for r in ok if r.transitions and r.commits]
            upc = [r.units / r.commits for r in ok if r.units and r.commits]
            cps = [r.commits / r.sagas for r in ok if r.commits]
            rows.append(
                Row(
                    backend,
                    concurrency,
                    _med(rates),
                    _med(tps),
                    _med(tpc),
                    _med(upc),
                    _med(cps),
                    _med([r.overhead_p50_s for r in ok]),
                    _med([r.overhead_p99_s for r in ok]),
                    None
                    if backend is Backend.MEMORY
                    else _med([_ratio(runs, r, Backend.MEMORY) for r in ok]),
                    None
                    if backend is Backend.DBOS
                    else _med([_ratio(runs, r, Backend.DBOS) for r in ok]),
                    tuple(sorted({r.error for r in mine if r.error})),
                )
            )
    return tuple(rows)


HEADER: Final = (
    "backend",
    "concurrency",
    "sagas/s",
    "transitions/s",
    "transitions/commit",
    "writes/commit",
    "commits/saga",
    "step overhead p50 (ms)",
    "p99 (ms)",
    "vs in-memory",
    "vs DBOS",
)


def table(rows: Sequence[Row]) -> str:
    cells = [
        [
            r.backend.value,
            str(r.concurrency),
            fmt_num(r.sagas_per_s) if r.sagas_per_s is not None else "failed",
            fmt_num(r.transitions_per_s),
            fmt_num(r.transitions_per_commit, 2),
            fmt_num(r.units_per_commit, 1),
            fmt_num(r.commits_per_saga, 2),
            fmt_ms(r.overhead_p50_s),
            fmt_ms(r.overhead_p99_s),
            fmt_ratio(r.vs_memory),
            fmt_ratio(r.vs_dbos),
        ]
        for r in rows
    ]
    return markdown_table(HEADER, cells)


def _verdict(rows: Sequence[Row], dbos_note: str | None) -> list[str]:
    lines: list[str] = []
    durable = next(
        (r for r in rows if r.backend is Backend.DURABLE and r.concurrency == TARGET_CONCURRENCY),
        None,
    )
    if durable is None or durable.sagas_per_s is None:
        return [
            f"Target (durable ≥ {TARGET_RATIO:g}x DBOS at concurrency {TARGET_CONCURRENCY}): "
            "not measured in this run."
        ]
    if durable.vs_dbos is not None:
        met = "met" if durable.vs_dbos >= TARGET_RATIO else "MISSED"
        lines.append(
            f"Target: the durable engine at concurrency {TARGET_CONCURRENCY} does at least "
            f"{TARGET_RATIO:g}x DBOS's rate measured in this run: "
            f"{fmt_ratio(durable.vs_dbos)} → **{met}**."
        )
    else:
        why = dbos_note or "DBOS failed"
        lines.append(f"Target against DBOS in this run: not measured ({why}).")
    pg = next(
        (r for r in rows if r.backend is Backend.POSTGRES and r.concurrency == TARGET_CONCURRENCY),
        None,
    )
    if pg is not None and pg.sagas_per_s is not None:
        lines.append(
            f"The PostgreSQL log at concurrency {TARGET_CONCURRENCY}: "
            f"{fmt_num(pg.sagas_per_s)} sagas/s, {fmt_ratio(pg.sagas_per_s / durable.sagas_per_s)} "
            "the SQLite log's (same repetitions' medians)."
        )
    ref = durable.sagas_per_s / DBOS_REFERENCE_PER_S
    lines.append(
        f"Against the team's reference figure for DBOS on SQLite on this machine "
        f"(~{DBOS_REFERENCE_PER_S:g} three-step workflows/s at best), the durable engine's "
        f"{fmt_num(durable.sagas_per_s)} sagas/s is {fmt_ratio(ref)} "
        f"(the target would need {fmt_num(TARGET_RATIO * DBOS_REFERENCE_PER_S)} sagas/s)."
    )
    return lines


def render(
    settings: EngineBenchSettings, rows: Sequence[Row], info: dict[str, str], dbos_note: str | None
) -> str:
    s = settings
    parts = [
        "## Engine benchmark",
        "",
        f"`{s.command}`: {STEPS}-step no-op sagas, {fmt_num(s.sagas)} per engine measurement, "
        f"{fmt_num(s.dbos_sagas)} per DBOS measurement; every cell is the median of "
        f"{s.reps} repetition{'s' if s.reps != 1 else ''}, ratios are medians of the ratios "
        "within each repetition (same run, same machine).",
        "",
        table(rows),
        "",
        *_verdict(rows, dbos_note),
    ]
    errors = sorted({(r.backend.value, e) for r in rows for e in r.errors})
    if dbos_note:
        parts += ["", f"DBOS baseline: {dbos_note}."]
    else:
        api = (
            "sync workflows, each of N threads running one to its end, then the next"
            if s.dbos_api is DbosApi.THREADS
            else "async workflows, N in flight (start_workflow_async, then get_result)"
        )
        journal = (
            "its SQLite file put in WAL mode as the engine's log (DBOS sets none)"
            if s.dbos_journal is DbosJournal.WAL
            else "its SQLite file in the rollback journal DBOS leaves it in"
        )
        parts += [
            "",
            f"DBOS baseline: {api}; {journal}; synchronous=FULL (SQLite's default, like "
            "the engine's log), one child process per measurement.",
        ]
    for backend, error in errors:
        parts += ["", f"{backend} failed: `{error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


def _chart(settings: EngineBenchSettings, rows: Sequence[Row]) -> Path | None:
    series = [
        Series(
            b.value,
            tuple((float(r.concurrency), r.sagas_per_s) for r in rows if r.backend is b),
        )
        for b in Backend
        if any(r.backend is b for r in rows)
    ]
    return write_chart(
        settings.out / "engine.png",
        series,
        title=f"Sagas of {STEPS} no-op steps: throughput vs concurrency",
        xlabel="sagas in flight",
        ylabel="sagas/s (median)",
    )


def run(settings: EngineBenchSettings, progress: Callable[[str], None]) -> EngineReport:
    dbos_note = "skipped (--no-dbos)" if not settings.dbos else dbos_baseline.available()
    backends = [Backend.DURABLE] + ([Backend.POSTGRES] if settings.postgres else [])
    backends += [Backend.MEMORY] + ([] if dbos_note else [Backend.DBOS])
    runs: list[Run] = []
    for rep in range(1, settings.reps + 1):
        for concurrency in settings.concurrencies:
            for backend in backends:
                got = _measure(backend, concurrency, rep, settings)
                runs.append(got)
                rate = "failed: " + (got.error or "") if got.rate is None else f"{got.rate:,.0f}"
                progress(f"rep {rep}/{settings.reps}  c={concurrency:<4} {backend.value}: {rate}")
    rows = summarize(runs)
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    extra = {"DBOS": dbos_baseline.version() or "not installed"}
    info = machine(data_dir, extra)
    markdown = render(settings, rows, info, dbos_note)
    out = settings.out
    files = write_outputs(
        out,
        "engine",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[{**asdict(r), "backend": r.backend.value} for r in runs],
        data_dir=data_dir,
    )
    chart = _chart(settings, rows) if settings.chart else None
    if chart is not None:
        files.append(chart)
    return EngineReport(settings, tuple(runs), rows, markdown, tuple(files))
