"""The scale-out benchmark: 1, 2, 3 `saga gateway` processes and one `saga recovery`
daemon sharing one saga log (PostgreSQL by default: each measurement on a fresh database
of its own), under the same load, so that what each added gateway brings, and what each
process spends per order, can be read even on a 2-core machine.

One measurement (fresh processes, a fresh database, every time): the three services, a
private Redis, N gateways on their own ports, one daemon; the connections (64 in all)
split evenly among the gateways, each share driven by its own wrk (bench/wrk.py; by
bench/loadgen.py where there is no wrk) for the duration; then every saga to its end.
- accepted orders/s: the 201s of every gateway ÷ the load's duration;
- end-to-end orders/s: orders in the log ÷ (last terminal write - first POST), read from
  the log; `vs 1 gateway` divides it by the one-gateway measurement of the same
  repetition;
- CPU seconds per 1,000 orders of every process, from the first POST until every saga was
  terminal (the gateways summed, and each apart in the report).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench.cpu import StackCpu
from bench.errors import BenchError
from bench.loadgen import LoadChild, LoadResult, LoadSpec
from bench.measure import SERVICES, SETTLE_S, fetch_orders, wait_settled
from bench.pg import DEFAULT_PG_URL, count_sagas, fresh_database
from bench.report import (
    fmt_ms,
    fmt_num,
    fmt_ratio,
    machine,
    markdown_table,
    median,
    percentile,
    write_outputs,
)
from bench.stack import BenchStack
from bench.wrk import WrkFound, WrkSpec, find_wrk, run_wrk

__all__ = ["HEADER", "ScaleBackend", "ScaleReport", "ScaleRun", "ScaleSettings", "run"]


class ScaleBackend(StrEnum):
    POSTGRES = "PostgreSQL log"
    SQLITE = "SQLite log (FULL)"  # one file shared by the gateways: the baseline


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    gateways: tuple[int, ...] = (1, 2, 3)
    concurrency: int = 64  # connections in all, split among the gateways
    duration_s: float = 10.0
    reps: int = 3
    backend: ScaleBackend = ScaleBackend.POSTGRES
    pg_url: str = DEFAULT_PG_URL
    install_wrk: bool = True
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench scale"

    @classmethod
    def quick(cls) -> ScaleSettings:
        return cls(gateways=(1, 2), concurrency=4, duration_s=1.0, reps=1)


@dataclass(frozen=True, slots=True)
class _Load:
    """What one load generator saw, whichever it was."""

    started_wall_s: float
    seconds: float
    statuses: dict[str, int]  # answers by status, or by client-side failure
    p99_s: float | None  # of every answer (wrk) or of the 201s (loadgen.py)


@dataclass(frozen=True, slots=True)
class ScaleRun:
    gateways: int
    rep: int
    seconds: float = 0.0
    accepted: int = 0  # 201s, every gateway
    orders: int = 0  # sagas in the log
    e2e_per_s: float | None = None
    p99_201_s: float | None = None  # the worst gateway's
    not_201: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # load start → settled
    error: str | None = None

    def per_k(self, names: Sequence[str]) -> float | None:
        if self.error or not self.orders:
            return None
        return 1000 * sum(self.cpu_s.get(n, 0.0) for n in names) / self.orders

    @property
    def gateway_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.cpu_s if n.startswith("gateway"))


def _split(total: int, parts: int) -> list[int]:
    """`total` connections over `parts` gateways, as evenly as can be (at least 1 each)."""
    return [max(1, total // parts + (1 if i < total % parts else 0)) for i in range(parts)]


def _drive(
    ports: Sequence[int], settings: ScaleSettings, rep: int, wrk: str | None, root: Path
) -> list[_Load]:
    shares = _split(settings.concurrency, len(ports))
    if wrk is not None:
        specs = [
            WrkSpec(port, settings.duration_s, c, key_prefix=f"wrk{rep}g{i}")
            for i, (port, c) in enumerate(zip(ports, shares, strict=True))
        ]
        with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
            got = list(pool.map(lambda spec: run_wrk(spec, wrk, root), specs))
        return [
            _Load(
                r.started_wall_s,
                r.seconds,
                {str(k): v for k, v in r.statuses.items()} | r.errors,
                r.p99_s,
            )
            for r in got
        ]
    children = [
        LoadChild(
            LoadSpec(port=port, duration_s=settings.duration_s, concurrency=c,
                     key_prefix=f"load{rep}g{i}"),
            root,
            name=f"load{i}",
        ).start()
        for i, (port, c) in enumerate(zip(ports, shares, strict=True))
    ]  # fmt: skip
    results: list[LoadResult] = [c.result(settings.duration_s + 60) for c in children]
    return [
        _Load(
            r.started_wall_s,
            r.seconds,
            dict(Counter(str(s.status) for s in r.samples)),
            percentile([s.latency_s for s in r.samples if s.status == 201], 99),
        )
        for r in results
    ]


def measure(
    gateways: int, rep: int, settings: ScaleSettings, root: Path, wrk: str | None, url: str | None
) -> ScaleRun:
    run = ScaleRun(gateways, rep)
    log_env = {"SAGA_DATABASE_URL": url} if url else {}
    with BenchStack(root, redis=True) as stack:
        stack.start_services()
        stack.start_gateway(memory=False, **log_env)
        ports = [stack.port]
        ports += [stack.add_gateway(f"gateway-{i}", **log_env) for i in range(2, gateways + 1)]
        stack.start_recovery(**log_env)
        meter = StackCpu(stack.processes(), url)
        meter.start()
        loads = _drive(ports, settings, rep, wrk, root)
        settled = wait_settled(stack.url, SETTLE_S)
        meter.stop()
        ends = fetch_orders(stack.url)
        dead = [n for n, p in stack.processes().items() if n.startswith("gateway") and not p.alive]
    if dead:
        return replace(run, error=f"{', '.join(dead)} died")
    if url and count_sagas(url) == 0:
        return replace(run, error="the gateways ignored SAGA_DATABASE_URL: no saga in it")
    start_ms = 1000 * min(x.started_wall_s for x in loads)
    done = [e.updated_ms for e in ends.values() if e.status != "PENDING"]
    span_s = (max(done) - start_ms) / 1000 if done else 0.0
    statuses = sum((Counter(x.statuses) for x in loads), Counter())
    p99s = [x.p99_s for x in loads if x.p99_s is not None]
    run = replace(
        run,
        seconds=max(x.seconds for x in loads),
        accepted=statuses.pop("201", 0),
        orders=len(ends),
        e2e_per_s=len(ends) / span_s if span_s > 0 else None,
        p99_201_s=max(p99s) if p99s else None,
        not_201=dict(statuses),
        cpu_s=meter.seconds,
    )
    if not settled:
        return replace(run, error=f"sagas not terminal {SETTLE_S:g}s after the load")
    if run.accepted == 0:
        return replace(run, error="no order was accepted")
    return run


def _measure(gateways: int, rep: int, settings: ScaleSettings, wrk: str | None) -> ScaleRun:
    with contextlib.ExitStack() as resources:
        try:
            tmp = resources.enter_context(
                tempfile.TemporaryDirectory(prefix="saga-scale-", dir=settings.data_dir)
            )
            url = None
            if settings.backend is ScaleBackend.POSTGRES:
                url = resources.enter_context(fresh_database(settings.pg_url))
            return measure(gateways, rep, settings, Path(tmp), wrk, url)
        except (BenchError, RuntimeError, OSError) as exc:
            return ScaleRun(gateways, rep, error=str(exc)[:500])


# ---- the report -----------------------------------------------------------------------------

HEADER: Final = (
    "gateways",
    "connections",
    "accepted orders/s",
    "end-to-end orders/s",
    "vs 1 gateway",
    "201 p99 (ms, worst gateway)",
    "gateways CPU s/1k",
    "recovery CPU s/1k",
    "services CPU s/1k",
    "postgres CPU s/1k",
    "stack CPU s/1k",
)


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _vs_one(runs: Sequence[ScaleRun], of: ScaleRun) -> float | None:
    for r in runs:
        if r.gateways == 1 and r.rep == of.rep and r.error is None:
            return None if of.e2e_per_s is None or not r.e2e_per_s else of.e2e_per_s / r.e2e_per_s
    return None


def table(settings: ScaleSettings, runs: Sequence[ScaleRun]) -> str:
    cells = []
    for n in settings.gateways:
        ok = [r for r in runs if r.gateways == n and r.error is None]
        cells.append(
            [
                str(n),
                " + ".join(str(c) for c in _split(settings.concurrency, n)),
                fmt_num(_med([r.accepted / r.seconds for r in ok if r.seconds]))
                if ok
                else "failed",
                fmt_num(_med([r.e2e_per_s for r in ok])),
                fmt_ratio(_med([_vs_one(runs, r) for r in ok])),
                fmt_ms(_med([r.p99_201_s for r in ok])),
                fmt_num(_med([r.per_k(r.gateway_names) for r in ok]), 2),
                fmt_num(_med([r.per_k(("recovery",)) for r in ok]), 2),
                fmt_num(_med([r.per_k(SERVICES) for r in ok]), 2),
                fmt_num(_med([r.per_k(("postgres",)) for r in ok if "postgres" in r.cpu_s]), 2),
                fmt_num(_med([r.per_k(tuple(r.cpu_s)) for r in ok]), 2),
            ]
        )
    return markdown_table(HEADER, cells)


def render(settings: ScaleSettings, runs: Sequence[ScaleRun], info: dict[str, str]) -> str:
    s = settings
    where = (
        "a fresh PostgreSQL database per measurement"
        if s.backend is ScaleBackend.POSTGRES
        else "one SQLite file (synchronous=FULL)"
    )
    parts = [
        "## Scale-out benchmark",
        "",
        f"`{s.command}`: N `saga gateway` processes and one `saga recovery` on {where}, the "
        f"three services and a private Redis; {s.concurrency} closed-loop connections in all, "
        f"split among the gateways, for {s.duration_s:g} s; medians of {s.reps} repetition"
        f"{'s' if s.reps != 1 else ''}. End-to-end orders/s: orders in the log ÷ (last "
        "terminal write - first POST). CPU s/1k: CPU seconds per 1,000 orders from the "
        "first POST until every saga was terminal (postgres: the server's backends "
        "serving the stack's database).",
        "",
        table(settings, runs),
        "",
        "Each process's CPU seconds per 1,000 orders (repetition 1):",
        "",
    ]
    for r in runs:
        if r.rep == 1 and r.error is None:
            each = ", ".join(f"{n} {fmt_num(r.per_k((n,)), 2)}" for n in r.cpu_s)
            parts.append(f"- {r.gateways} gateway{'s' if r.gateways != 1 else ''}: {each}")
    for r in runs:
        if r.not_201:
            what = ", ".join(f"{n:,} {k}" for k, n in sorted(r.not_201.items()))
            parts += ["", f"Answers other than 201, {r.gateways} gateways, rep {r.rep}: {what}."]
        if r.error:
            parts += ["", f"{r.gateways} gateways, rep {r.rep} failed: `{r.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class ScaleReport:
    settings: ScaleSettings
    runs: tuple[ScaleRun, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def run(settings: ScaleSettings, progress: Callable[[str], None]) -> ScaleReport:
    found: WrkFound = find_wrk(install=settings.install_wrk)
    progress(found.how if found.path else f"{found.how}: bench/loadgen.py drives the load")
    runs: list[ScaleRun] = []
    for rep in range(1, settings.reps + 1):
        for n in settings.gateways:
            got = _measure(n, rep, settings, found.path)
            runs.append(got)
            what = (
                f"failed: {got.error}"
                if got.error
                else f"{fmt_num(got.e2e_per_s)} end to end/s, "
                f"{fmt_num(got.per_k(tuple(got.cpu_s)), 2)} CPU s/1k"
            )
            progress(f"rep {rep}/{settings.reps}  {n} gateway(s): {what}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    client = found.how if found.path else "bench/loadgen.py"
    info = machine(data_dir, {"load generator": client})
    markdown = render(settings, runs, info)
    files = write_outputs(
        settings.out,
        "scale",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[asdict(r) for r in runs],
        data_dir=data_dir,
    )
    return ScaleReport(settings, tuple(runs), markdown, tuple(files))
