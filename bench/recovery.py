"""The recovery benchmark: one `saga recovery` daemon against a backlog of order sagas
left unfinished at random steps (bench/crashed.py says how they are made), timed until
every one is terminal, beside the same daemon on as many fresh sagas (queued by a busy
gateway, never started): normal processing on the same road, in the same run.

One repetition, each half on a fresh stack (the three services, a fresh saga log):
- recovery: build the crashed backlog; start `saga recovery`; wait until no saga is
  RUNNING or COMPENSATING; the rate is sagas ÷ (last terminal write - first claim),
  read from the log; "until all terminal" counts from the daemon's spawn (start-up
  included); then `orders.audit` judges every invariant of the contract;
- fresh: the same count of never-started sagas, the same daemon, the same timing.
The ratio recovery ÷ fresh is taken within each repetition; cells are medians.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench import pg
from bench.crashed import LogAt, Spread, build_crashed, build_fresh, spread_lines
from bench.errors import BenchError
from bench.measure import CpuMeter, fmt_cpu
from bench.pg import DEFAULT_PG_URL
from bench.report import fmt_num, fmt_ratio, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from engine.core import ACTIVE_STATUSES
from engine.errors import EngineError
from engine.log_settings import SagaLogSettings
from engine.sqlite import DbConfig, open_connection
from orders.audit import audit
from orders.audit_io import read_snapshot
from orders.participants import ServiceAddresses

__all__ = ["HEADER", "Kind", "RecoveryBenchSettings", "RecoveryReport", "Run", "run"]

TARGET_VS_FRESH: Final = 1.0  # recovery at least as fast as normal processing
_ACTIVE: Final = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)


class Kind(StrEnum):
    CRASHED = "crashed backlog (random steps)"
    FRESH = "fresh sagas (never started)"


@dataclass(frozen=True, slots=True)
class RecoveryBenchSettings:
    sagas: int = 10_000
    reps: int = 3
    concurrency: int = 128  # SAGA_RECOVERY_CONCURRENCY, the daemon's default
    seed: int = 7
    timeout_s: float = 600.0
    postgres: bool = False  # the log on PostgreSQL (a fresh database per measurement)
    pg_url: str = DEFAULT_PG_URL
    daemons: int = 1  # >1: the crashed backlog also with this many daemons at once
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench recovery"

    @classmethod
    def quick(cls) -> RecoveryBenchSettings:
        return cls(sagas=60, reps=1, timeout_s=60.0)


@dataclass(frozen=True, slots=True)
class Run:
    kind: Kind
    rep: int
    sagas: int
    daemons: int = 1
    rate: float | None = None  # sagas ÷ (last terminal write - first claim)
    all_terminal_s: float | None = None  # from the daemon's spawn to the last terminal write
    first_claim_s: float | None = None  # from the spawn to its first claim (start-up)
    by_status: dict[str, int] = field(default_factory=dict)
    violations: int | None = None
    claims: int | None = None  # CLAIMED transitions written
    claimed_twice: int | None = None  # sagas claimed more than once
    same_epoch: int | None = None  # (saga, epoch) claimed more than once: must be 0
    cpu: dict[str, float] = field(default_factory=dict)
    spread: tuple[tuple[tuple[str, str, str], int], ...] = ()
    error: str | None = None


class _Reader:
    """Read-only SQL on the saga log, SQLite's file or PostgreSQL's schema (the same
    tables and columns in both)."""

    def __init__(self, log_path: Path, url: str | None) -> None:
        self._path = log_path
        self._url = url

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        if self._url is not None:
            return pg.query(self._url, sql)
        conn = open_connection(DbConfig(self._path, readonly=True))
        try:
            return [tuple(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def one(self, sql: str) -> object:
        return self.rows(sql)[0][0]


def _wait_done(log: _Reader, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if log.one(f"SELECT count(*) FROM sagas WHERE status IN ({_ACTIVE})") == 0:
            return True
        time.sleep(0.1)
    return False


_CLAIMED_TWICE: Final = (
    "SELECT count(*) FROM (SELECT saga_seq FROM transitions WHERE phase = 'claimed' "
    "GROUP BY saga_seq HAVING count(*) > 1) AS t"
)
_SAME_EPOCH: Final = (
    "SELECT count(*) FROM (SELECT saga_seq, attempt FROM transitions WHERE phase = 'claimed' "
    "GROUP BY saga_seq, attempt HAVING count(*) > 1) AS t"
)


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def measure(
    kind: Kind,
    rep: int,
    settings: RecoveryBenchSettings,
    root: Path,
    *,
    daemons: int = 1,
    url: str | None = None,
) -> Run:
    run = Run(kind, rep, settings.sagas, daemons)
    log_env = {"SAGA_DATABASE_URL": url} if url else {}
    with BenchStack(root, redis=False) as stack:
        stack.start_services()
        services = ServiceAddresses.from_env(stack.env)
        log_at: LogAt = SagaLogSettings.from_env(log_env) if url else stack.log_path
        if kind is Kind.CRASHED:
            spread = build_crashed(log_at, services, settings.sagas, settings.seed + rep)
        else:
            spread = build_fresh(log_at, services, settings.sagas)
        run = replace(run, spread=spread.counts)
        log = _Reader(stack.log_path, url)
        meter = CpuMeter(stack.services)
        server = pg.ServerCpu(url) if url else None
        spawned_ms = time.time() * 1000
        meter.start()
        if server:
            server.start()
        procs = stack.start_recoveries(
            daemons,
            SAGA_RECOVERY_CONCURRENCY=str(settings.concurrency),
            SAGA_RECOVERY_INTERVAL_S="1",
            **log_env,
        )
        done = _wait_done(log, time.monotonic() + settings.timeout_s)
        cores = meter.stop()
        wall = max(1e-9, time.time() - spawned_ms / 1000)
        cores["recovery"] = sum(p.cpu_seconds() for p in procs) / wall
        if server:
            cores["postgres"] = server.stop() / wall
        first_claim = log.one("SELECT min(at_ms) FROM transitions WHERE phase = 'claimed'")
        last = log.one("SELECT max(updated_ms) FROM sagas")
        statuses = {
            str(row[0]): _int(row[1])
            for row in log.rows("SELECT status, count(*) FROM sagas GROUP BY 1")
        }
        claims = _int(log.one("SELECT count(*) FROM transitions WHERE phase = 'claimed'"))
        claimed_twice = _int(log.one(_CLAIMED_TWICE))
        same_epoch = _int(log.one(_SAME_EPOCH))
        report = audit(read_snapshot(log_at, services))
    run = replace(
        run,
        by_status=statuses,
        violations=len(report.violations),
        claims=claims,
        claimed_twice=claimed_twice,
        same_epoch=same_epoch,
        cpu=cores,
    )
    if not done:
        return replace(run, error=f"not all terminal after {settings.timeout_s:g}s")
    if first_claim is None or last is None:
        return replace(run, error="the daemon claimed nothing")
    span_s = max(1e-3, (_int(last) - _int(first_claim)) / 1000)
    return replace(
        run,
        rate=settings.sagas / span_s,
        all_terminal_s=(_int(last) - spawned_ms) / 1000,
        first_claim_s=(_int(first_claim) - spawned_ms) / 1000,
    )


def _measure(kind: Kind, rep: int, settings: RecoveryBenchSettings, daemons: int) -> Run:
    with contextlib.ExitStack() as resources:
        try:
            tmp = resources.enter_context(
                tempfile.TemporaryDirectory(prefix="saga-recovery-", dir=settings.data_dir)
            )
            url = (
                resources.enter_context(pg.fresh_database(settings.pg_url))
                if settings.postgres
                else None
            )
            return measure(kind, rep, settings, Path(tmp), daemons=daemons, url=url)
        except (BenchError, EngineError, RuntimeError, OSError) as exc:
            return Run(kind, rep, settings.sagas, daemons, error=str(exc)[:500])


HEADER: Final = (
    "daemons",
    "sagas",
    "daemon concurrency",
    "until all terminal (s)",
    "of which start-up (s)",
    "sagas/s",
    "vs fresh",
    "vs 1 daemon",
    "sagas claimed twice",
    "… at one epoch",
    "NEEDS_ATTENTION",
    "audit violations",
)


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _ratio(runs: Sequence[Run], of: Run, kind: Kind, daemons: int) -> float | None:
    for other in runs:
        if (other.kind, other.daemons, other.rep) == (kind, daemons, of.rep):
            if other.error or of.rate is None or not other.rate:
                return None
            return of.rate / other.rate
    return None


def _cells(settings: RecoveryBenchSettings, runs: Sequence[Run], kind: Kind, n: int) -> list[str]:
    mine = [r for r in runs if r.kind is kind and r.daemons == n]
    ok = [r for r in mine if r.error is None]
    violations = [r.violations for r in mine if r.violations is not None]
    crashed = kind is Kind.CRASHED

    def total(values: Sequence[int | None]) -> str:
        known = [v for v in values if v is not None]
        return fmt_num(sum(known)) if known else "—"

    return [
        kind.value,
        str(n),
        fmt_num(settings.sagas),
        str(settings.concurrency),
        fmt_num(_med([r.all_terminal_s for r in ok]), 1),
        fmt_num(_med([r.first_claim_s for r in ok]), 1),
        fmt_num(_med([r.rate for r in ok])) if ok else "failed",
        fmt_ratio(_med([_ratio(runs, r, Kind.FRESH, 1) for r in ok])) if crashed else "—",
        fmt_ratio(_med([_ratio(runs, r, Kind.CRASHED, 1) for r in ok]))
        if crashed and n > 1
        else "—",
        total([r.claimed_twice for r in mine]),
        total([r.same_epoch for r in mine]),
        fmt_num(sum(r.by_status.get("NEEDS_ATTENTION", 0) for r in mine)),
        fmt_num(sum(violations)) if violations else "—",
    ]


def _plan(settings: RecoveryBenchSettings) -> list[tuple[Kind, int]]:
    """What one repetition measures: the crashed backlog with one daemon (and with
    `daemons` when more), then fresh sagas with one."""
    plan = [(Kind.CRASHED, 1)]
    if settings.daemons > 1:
        plan.append((Kind.CRASHED, settings.daemons))
    return [*plan, (Kind.FRESH, 1)]


def table(settings: RecoveryBenchSettings, runs: Sequence[Run]) -> str:
    cells = [_cells(settings, runs, kind, n) for kind, n in _plan(settings)]
    return markdown_table(("backlog", *HEADER), cells)


def render(settings: RecoveryBenchSettings, runs: Sequence[Run], info: dict[str, str]) -> str:
    s = settings
    where = "a fresh PostgreSQL database per measurement" if s.postgres else "SQLite"
    parts = [
        "## Recovery benchmark",
        "",
        f"`{s.command}`: `saga recovery` (SAGA_RECOVERY_CONCURRENCY={s.concurrency}) "
        f"against {fmt_num(s.sagas)} order sagas in a saga log on {where}, on the three "
        "`saga service` processes; "
        f"medians of {s.reps} repetition{'s' if s.reps != 1 else ''}; sagas/s is the count "
        "over the time from the daemon's first claim to the last terminal write (both read "
        "from the log); audit violations and sagas claimed twice are summed over every "
        "repetition (claimed twice: a saga with more than one CLAIMED transition; at one "
        "epoch: two claims that took the same epoch, which fencing must make impossible).",
        "",
        table(settings, runs),
        "",
    ]
    crashed = [r for r in runs if r.kind is Kind.CRASHED and r.daemons == 1 and r.error is None]
    ratio = _med([_ratio(runs, r, Kind.FRESH, 1) for r in crashed])
    if ratio is not None:
        met = "met" if ratio >= TARGET_VS_FRESH else "MISSED"
        parts.append(
            f"Target: recovery at least as fast as normal processing (the same daemon on "
            f"fresh sagas, same run): {fmt_ratio(ratio)} → **{met}**."
        )
    first = next((r for r in runs if r.kind is Kind.CRASHED and r.spread), None)
    if first is not None:
        parts += ["", "Where the crashed sagas stopped (repetition 1):", ""]
        parts += [f"- {line}" for line in spread_lines(Spread(first.spread))]
    for r in runs:
        if r.error is None and r.rep == 1:
            parts.append(f"- CPU, {r.kind.value}, {r.daemons} daemon(s): {fmt_cpu(r.cpu)}")
    for r in runs:
        if r.error:
            parts += ["", f"{r.kind.value}, {r.daemons} daemon(s), rep {r.rep} failed: `{r.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    settings: RecoveryBenchSettings
    runs: tuple[Run, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def run(settings: RecoveryBenchSettings, progress: Callable[[str], None]) -> RecoveryReport:
    runs: list[Run] = []
    for rep in range(1, settings.reps + 1):
        for kind, daemons in _plan(settings):
            got = _measure(kind, rep, settings, daemons)
            runs.append(got)
            what = (
                f"failed: {got.error}"
                if got.error
                else f"{fmt_num(got.rate)} sagas/s, all terminal after "
                f"{fmt_num(got.all_terminal_s, 1)} s, {got.violations} violations"
            )
            progress(f"rep {rep}/{settings.reps}  {kind.value}, {daemons} daemon(s): {what}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir)
    markdown = render(settings, runs, info)
    out = settings.out
    files = write_outputs(
        out,
        "recovery",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[{**asdict(r), "kind": r.kind.value} for r in runs],
        data_dir=data_dir,
    )
    return RecoveryReport(settings, tuple(runs), markdown, tuple(files))
