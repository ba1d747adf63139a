"""The end-to-end benchmark: `POST /orders` over HTTP to a durable 201, then the saga's
four gRPC steps to its terminal status, on the real stack (three `saga service`
processes, `saga gateway`, a private Redis for idempotency), beside the same stack with
the saga log in memory (`SAGA_LOG_BACKEND=memory`): the cost of durability as a ratio.

One measurement (a fresh data folder, fresh processes, every time):
- the load generator (bench/loadgen.py, its own process) keeps N connections each
  sending its next order (its own idempotency key, one prod_1 at 50.00) as soon as the
  previous one is answered, for warm-up + duration seconds;
- the window is the duration after the warm-up: accepted orders/s counts the 201s
  answered in it; finished sagas/s the sagas whose terminal status was written in it;
- end-to-end orders/s is every accepted order of the run ÷ the time from the load's
  start to the last one's terminal write: what the stack sustains when taking orders
  and driving their sagas share it (a gateway can accept faster than it finishes for
  a while: the surplus waits in the log), so the ratio to the in-memory stack is on it;
- latency to 201 is the client's (send to last byte); latency to terminal is the saga's
  terminal `updated_ms` minus the send time, read afterwards (bench/measure.py);
- CPU of every process over the load, so the bottleneck is on the table.

Both backends are measured at every concurrency in every repetition, interleaved.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench.loadgen import CONNECT_ERROR, TIMEOUT, LoadChild, LoadResult, LoadSpec, Sample
from bench.measure import CpuMeter, OrderEnd, fetch_orders, fmt_cpu, wait_settled
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
from bench.stack import BenchStack

__all__ = [
    "HEADER",
    "Backend",
    "E2eReport",
    "E2eSettings",
    "Row",
    "Run",
    "measure",
    "run",
    "summarize",
]

# Targets (this 2-core machine): the durable stack at least this share of the in-memory
# stack's rate, and the 201's p99 under this many seconds, at this concurrency.
TARGET_VS_MEMORY: Final = 0.80
TARGET_P99_S: Final = 0.025
TARGET_CONCURRENCY: Final = 64
SETTLE_S: Final = 120.0  # how long sagas may take to finish after the load


class Backend(StrEnum):
    DURABLE = "SQLite log (FULL)"
    MEMORY = "in-memory log"


@dataclass(frozen=True, slots=True)
class E2eSettings:
    concurrencies: tuple[int, ...] = (16, 64, 256)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    reps: int = 3
    redis: bool = True
    chart: bool = True
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench e2e"

    @classmethod
    def quick(cls) -> E2eSettings:
        """A smoke run: proves the harness in seconds, measures nothing."""
        return cls(concurrencies=(4,), duration_s=1.0, warmup_s=0.2, reps=1)


@dataclass(frozen=True, slots=True)
class Run:
    """One measurement of one backend at one concurrency in one repetition."""

    backend: Backend
    concurrency: int
    rep: int
    window_s: float
    accepted: int = 0  # 201s answered in the window
    finished: int = 0  # sagas that reached their terminal status in the window
    e2e_per_s: float | None = None  # all 201s ÷ (last terminal write - load start)
    p50_201_s: float | None = None
    p99_201_s: float | None = None
    p50_terminal_s: float | None = None
    p99_terminal_s: float | None = None
    not_201: dict[str, int] = field(default_factory=dict)  # other answers, whole run
    unsettled: int = 0  # sagas still not terminal SETTLE_S after the load
    settle_s: float = 0.0  # from the end of the load until every saga was terminal
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, by process
    client_cpu: float | None = None  # the load generator's cores
    error: str | None = None

    @property
    def accepted_per_s(self) -> float | None:
        return None if self.error else self.accepted / self.window_s

    @property
    def finished_per_s(self) -> float | None:
        return None if self.error else self.finished / self.window_s


def _answer(sample: Sample) -> str:
    names = {TIMEOUT: "client timeout", CONNECT_ERROR: "connection error"}
    return names.get(sample.status, f"{sample.status} {sample.error}".strip())


def _analyse(
    run: Run, load: LoadResult, ends: dict[str, OrderEnd], warmup_s: float, duration_s: float
) -> Run:
    lo, hi = warmup_s, warmup_s + duration_s
    start_ms = load.started_wall_s * 1000
    ok = [s for s in load.samples if s.status == 201]
    in_window = [s for s in ok if lo <= s.sent_s + s.latency_s < hi]
    sent_in_window = [s for s in ok if lo <= s.sent_s < hi]
    lat_201 = [s.latency_s for s in sent_in_window]
    lat_end = [
        (ends[s.order_id].updated_ms - (start_ms + 1000 * s.sent_s)) / 1000
        for s in sent_in_window
        if s.order_id in ends and ends[s.order_id].status != "PENDING"
    ]
    finished = sum(
        1
        for e in ends.values()
        if e.status != "PENDING" and start_ms + 1000 * lo <= e.updated_ms < start_ms + 1000 * hi
    )
    ended = [ends[s.order_id].updated_ms for s in ok if s.order_id in ends]
    span_s = (max(ended) - start_ms) / 1000 if ended else 0.0
    return replace(
        run,
        accepted=len(in_window),
        finished=finished,
        e2e_per_s=len(ended) / span_s if span_s > 0 else None,
        p50_201_s=percentile(lat_201, 50),
        p99_201_s=percentile(lat_201, 99),
        p50_terminal_s=percentile(lat_end, 50),
        p99_terminal_s=percentile(lat_end, 99),
        not_201=dict(Counter(_answer(s) for s in load.samples if s.status != 201)),
        unsettled=sum(1 for e in ends.values() if e.status == "PENDING"),
        client_cpu=load.cpu_seconds / load.seconds,
    )


def measure(
    backend: Backend,
    concurrency: int,
    rep: int,
    settings: E2eSettings,
    root: Path,
    *,
    gateway_env: dict[str, str] | None = None,
) -> Run:
    """One measurement on a fresh stack in `root` (see the module's docstring)."""
    run = Run(backend, concurrency, rep, settings.duration_s)
    with BenchStack(root, redis=settings.redis) as stack:
        stack.start_services()
        stack.start_gateway(memory=backend is Backend.MEMORY, **(gateway_env or {}))
        spec = LoadSpec(
            port=stack.port,
            duration_s=settings.warmup_s + settings.duration_s,
            concurrency=concurrency,
        )
        meter = CpuMeter(stack.processes())
        child = LoadChild(spec, root).start()
        meter.start()
        load = child.result(timeout_s=spec.duration_s + 60)
        cores = meter.stop()
        ended = time.perf_counter()
        settled = wait_settled(stack.url, SETTLE_S)
        settle_s = time.perf_counter() - ended
        ends = fetch_orders(stack.url)
        if not stack.gateway or not stack.gateway.alive:
            return replace(run, error="the gateway died")
    run = replace(run, cpu=cores, settle_s=settle_s)
    run = _analyse(run, load, ends, settings.warmup_s, settings.duration_s)
    if not settled:
        return replace(run, error=f"{run.unsettled} sagas not terminal {SETTLE_S:g}s after")
    if run.accepted == 0:
        return replace(run, error="no order was accepted")
    return run


def _measure(backend: Backend, concurrency: int, rep: int, settings: E2eSettings) -> Run:
    with tempfile.TemporaryDirectory(prefix="saga-e2e-", dir=settings.data_dir) as tmp:
        try:
            return measure(backend, concurrency, rep, settings, Path(tmp))
        except (RuntimeError, OSError) as exc:  # a process failed: say so, go on
            return Run(backend, concurrency, rep, settings.duration_s, error=str(exc)[:500])


# ---- summary -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over repetitions for one backend at one concurrency."""

    backend: Backend
    concurrency: int
    accepted_per_s: float | None
    finished_per_s: float | None
    e2e_per_s: float | None
    p50_201_s: float | None
    p99_201_s: float | None
    p50_terminal_s: float | None
    p99_terminal_s: float | None
    gateway_cpu: float | None
    client_cpu: float | None
    vs_memory: float | None  # end-to-end orders/s over the in-memory stack's, same rep
    accepted_vs_memory: float | None  # accepted orders/s, likewise
    not_201: dict[str, int]
    errors: tuple[str, ...] = ()


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _ratio(runs: Sequence[Run], of: Run, rate: Callable[[Run], float | None]) -> float | None:
    for other in runs:
        if (other.backend, other.concurrency, other.rep) == (
            Backend.MEMORY,
            of.concurrency,
            of.rep,
        ):
            a, b = rate(of), rate(other)
            return None if a is None or not b else a / b
    return None


def _e2e(r: Run) -> float | None:
    return None if r.error else r.e2e_per_s


def _accepted(r: Run) -> float | None:
    return r.accepted_per_s


def summarize(runs: Sequence[Run]) -> tuple[Row, ...]:
    rows: list[Row] = []
    for backend in Backend:
        for c in sorted({r.concurrency for r in runs if r.backend is backend}):
            mine = [r for r in runs if r.backend is backend and r.concurrency == c]
            ok = [r for r in mine if r.error is None]
            memory = backend is Backend.MEMORY
            rows.append(
                Row(
                    backend,
                    c,
                    _med([r.accepted_per_s for r in ok]),
                    _med([r.finished_per_s for r in ok]),
                    _med([r.e2e_per_s for r in ok]),
                    _med([r.p50_201_s for r in ok]),
                    _med([r.p99_201_s for r in ok]),
                    _med([r.p50_terminal_s for r in ok]),
                    _med([r.p99_terminal_s for r in ok]),
                    _med([r.cpu.get("gateway") for r in ok]),
                    _med([r.client_cpu for r in ok]),
                    None if memory else _med([_ratio(runs, r, _e2e) for r in ok]),
                    None if memory else _med([_ratio(runs, r, _accepted) for r in ok]),
                    dict(sum((Counter(r.not_201) for r in mine), Counter())),
                    tuple(sorted({r.error for r in mine if r.error})),
                )
            )
    return tuple(rows)


HEADER: Final = (
    "saga log",
    "concurrency",
    "accepted orders/s",
    "sagas finished/s",
    "end-to-end orders/s",
    "201 p50 (ms)",
    "201 p99 (ms)",
    "terminal p50 (ms)",
    "terminal p99 (ms)",
    "gateway CPU",
    "client CPU",
    "vs in-memory (end to end)",
    "vs in-memory (accepted)",
)


def _pct(cores: float | None) -> str:
    return "—" if cores is None else f"{100 * cores:.0f}%"


def table(rows: Sequence[Row]) -> str:
    cells = [
        [
            r.backend.value,
            str(r.concurrency),
            fmt_num(r.accepted_per_s) if r.accepted_per_s is not None else "failed",
            fmt_num(r.finished_per_s),
            fmt_num(r.e2e_per_s),
            fmt_ms(r.p50_201_s),
            fmt_ms(r.p99_201_s),
            fmt_ms(r.p50_terminal_s),
            fmt_ms(r.p99_terminal_s),
            _pct(r.gateway_cpu),
            _pct(r.client_cpu),
            fmt_ratio(r.vs_memory),
            fmt_ratio(r.accepted_vs_memory),
        ]
        for r in rows
    ]
    return markdown_table(HEADER, cells)


def verdict(rows: Sequence[Row]) -> list[str]:
    at = {(r.backend, r.concurrency): r for r in rows}
    durable = at.get((Backend.DURABLE, TARGET_CONCURRENCY))
    if durable is None or durable.e2e_per_s is None:
        return [f"Targets (at concurrency {TARGET_CONCURRENCY}): not measured in this run."]
    lines = []
    if durable.vs_memory is not None:
        met = "met" if durable.vs_memory >= TARGET_VS_MEMORY else "MISSED"
        lines.append(
            f"Target: the durable stack at concurrency {TARGET_CONCURRENCY} does at least "
            f"{TARGET_VS_MEMORY:.0%} of the in-memory stack's end-to-end orders/s: "
            f"{durable.vs_memory:.0%} → **{met}** (accepted orders/s: "
            f"{fmt_ratio(durable.accepted_vs_memory)})."
        )
    if durable.p99_201_s is not None:
        met = "met" if durable.p99_201_s < TARGET_P99_S else "MISSED"
        lines.append(
            f"Target: the 201's p99 under {1000 * TARGET_P99_S:g} ms at concurrency "
            f"{TARGET_CONCURRENCY}: {fmt_ms(durable.p99_201_s)} ms → **{met}**."
        )
    return lines


def render(
    settings: E2eSettings, rows: Sequence[Row], runs: Sequence[Run], info: dict[str, str]
) -> str:
    s = settings
    redis = "a private redis-server as the idempotency cache" if s.redis else "no Redis"
    parts = [
        "## End-to-end benchmark",
        "",
        f"`{s.command}`: closed-loop HTTP clients (each sends its next `POST /orders` when "
        f"the previous one is answered), {s.duration_s:g} s measured after {s.warmup_s:g} s "
        f"of warm-up, on three `saga service` processes, `saga gateway` and {redis}; every "
        f"cell is the median of {s.reps} repetition{'s' if s.reps != 1 else ''} (ratios: "
        "median of the ratios within each repetition). CPU is the share of one core the "
        "process used during the load.",
        "",
        table(rows),
        "",
        *verdict(rows),
    ]
    cpu_lines = []
    for r in runs:
        if r.error is None and r.rep == 1:
            cpu_lines.append(
                f"- {r.backend.value}, concurrency {r.concurrency}: {fmt_cpu(r.cpu)}, "
                f"load generator {fmt_num(100 * (r.client_cpu or 0))}%; settled "
                f"{r.settle_s:.1f} s after the load"
            )
    if cpu_lines:
        parts += ["", "CPU by process (repetition 1):", "", *cpu_lines]
    for row in rows:
        if row.not_201:
            what = ", ".join(f"{n:,} {k}" for k, n in sorted(row.not_201.items()))
            parts += [
                "",
                f"Answers other than 201, {row.backend.value} at {row.concurrency} (all "
                f"repetitions): {what}.",
            ]
    for row in rows:
        for e in row.errors:
            parts += ["", f"{row.backend.value} at {row.concurrency} failed: `{e}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class E2eReport:
    settings: E2eSettings
    runs: tuple[Run, ...]
    rows: tuple[Row, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def _chart(settings: E2eSettings, rows: Sequence[Row]) -> Path | None:
    series = [
        Series(
            f"{b.value}: end-to-end orders/s",
            tuple((float(r.concurrency), r.e2e_per_s) for r in rows if r.backend is b),
        )
        for b in Backend
    ]
    return write_chart(
        settings.out / "e2e.png",
        series,
        title="POST /orders to terminal saga: throughput vs concurrent clients",
        xlabel="concurrent HTTP clients",
        ylabel="sagas/s (median)",
    )


def run(settings: E2eSettings, progress: Callable[[str], None]) -> E2eReport:
    runs: list[Run] = []
    for rep in range(1, settings.reps + 1):
        for c in settings.concurrencies:
            for backend in Backend:
                got = _measure(backend, c, rep, settings)
                runs.append(got)
                what = (
                    f"failed: {got.error}"
                    if got.error
                    else f"{fmt_num(got.accepted_per_s)} accepted/s, "
                    f"{fmt_num(got.finished_per_s)} finished/s, "
                    f"{fmt_num(got.e2e_per_s)} end to end/s, 201 p99 "
                    f"{fmt_ms(got.p99_201_s)} ms"
                )
                progress(f"rep {rep}/{settings.reps}  c={c:<4} {backend.value}: {what}")
    rows = summarize(runs)
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir)
    markdown = render(settings, rows, runs, info)
    out = settings.out
    files = write_outputs(
        out,
        "e2e",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[{**asdict(r), "backend": r.backend.value} for r in runs],
        data_dir=data_dir,
    )
    chart = _chart(settings, rows) if settings.chart else None
    if chart is not None:
        files.append(chart)
    return E2eReport(settings, tuple(runs), tuple(rows), markdown, tuple(files))
