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

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench.crashed import Spread, build_crashed, build_fresh, spread_lines
from bench.measure import CpuMeter, fmt_cpu
from bench.report import fmt_num, fmt_ratio, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from engine.core import ACTIVE_STATUSES
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
    rate: float | None = None  # sagas ÷ (last terminal write - first claim)
    all_terminal_s: float | None = None  # from the daemon's spawn to the last terminal write
    first_claim_s: float | None = None  # from the spawn to its first claim (start-up)
    by_status: dict[str, int] = field(default_factory=dict)
    violations: int | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    spread: tuple[tuple[tuple[str, str, str], int], ...] = ()
    error: str | None = None


def _query(log_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = open_connection(DbConfig(log_path, readonly=True))
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _wait_done(log_path: Path, deadline: float) -> bool:
    while time.monotonic() < deadline:
        rows = _query(log_path, f"SELECT count(*) FROM sagas WHERE status IN ({_ACTIVE})")
        if rows[0][0] == 0:
            return True
        time.sleep(0.1)
    return False


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def measure(kind: Kind, rep: int, settings: RecoveryBenchSettings, root: Path) -> Run:
    run = Run(kind, rep, settings.sagas)
    with BenchStack(root, redis=False) as stack:
        stack.start_services()
        services = ServiceAddresses.from_env(stack.env)
        if kind is Kind.CRASHED:
            spread = build_crashed(stack.log_path, services, settings.sagas, settings.seed + rep)
        else:
            spread = build_fresh(stack.log_path, services, settings.sagas)
        run = replace(run, spread=spread.counts)
        meter = CpuMeter(stack.services)
        spawned_ms = time.time() * 1000
        meter.start()
        daemon = stack.start_recovery(
            SAGA_RECOVERY_CONCURRENCY=str(settings.concurrency),
            SAGA_RECOVERY_INTERVAL_S="1",
        )
        done = _wait_done(stack.log_path, time.monotonic() + settings.timeout_s)
        cores = meter.stop()
        cores["recovery"] = daemon.cpu_seconds() / max(1e-9, time.time() - spawned_ms / 1000)
        first_claim = _query(
            stack.log_path, "SELECT min(at_ms) FROM transitions WHERE phase = 'claimed'"
        )[0][0]
        last = _query(stack.log_path, "SELECT max(updated_ms) FROM sagas")[0][0]
        statuses = {
            str(row[0]): _int(row[1])
            for row in _query(stack.log_path, "SELECT status, count(*) FROM sagas GROUP BY 1")
        }
        report = audit(read_snapshot(stack.log_path, services))
    run = replace(
        run,
        by_status=statuses,
        violations=len(report.violations),
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


def _measure(kind: Kind, rep: int, settings: RecoveryBenchSettings) -> Run:
    with tempfile.TemporaryDirectory(prefix="saga-recovery-", dir=settings.data_dir) as tmp:
        try:
            return measure(kind, rep, settings, Path(tmp))
        except (RuntimeError, OSError) as exc:
            return Run(kind, rep, settings.sagas, error=str(exc)[:500])


HEADER: Final = (
    "sagas",
    "daemon concurrency",
    "until all terminal (s)",
    "of which start-up (s)",
    "sagas/s",
    "vs fresh",
    "NEEDS_ATTENTION",
    "audit violations",
)


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _ratio(runs: Sequence[Run], of: Run) -> float | None:
    for other in runs:
        if other.kind is Kind.FRESH and other.rep == of.rep:
            return None if of.rate is None or not other.rate else of.rate / other.rate
    return None


def table(settings: RecoveryBenchSettings, runs: Sequence[Run]) -> str:
    cells = []
    for kind in Kind:
        mine = [r for r in runs if r.kind is kind]
        ok = [r for r in mine if r.error is None]
        violations = [r.violations for r in mine if r.violations is not None]
        cells.append(
            [
                kind.value,
                fmt_num(settings.sagas),
                str(settings.concurrency),
                fmt_num(_med([r.all_terminal_s for r in ok]), 1),
                fmt_num(_med([r.first_claim_s for r in ok]), 1),
                fmt_num(_med([r.rate for r in ok])) if ok else "failed",
                fmt_ratio(_med([_ratio(runs, r) for r in ok])) if kind is Kind.CRASHED else "—",
                fmt_num(sum(r.by_status.get("NEEDS_ATTENTION", 0) for r in mine)),
                fmt_num(sum(violations)) if violations else "—",
            ]
        )
    return markdown_table(("backlog", *HEADER), cells)


def render(settings: RecoveryBenchSettings, runs: Sequence[Run], info: dict[str, str]) -> str:
    s = settings
    parts = [
        "## Recovery benchmark",
        "",
        f"`{s.command}`: one `saga recovery` (SAGA_RECOVERY_CONCURRENCY={s.concurrency}) "
        f"against {fmt_num(s.sagas)} order sagas, on the three `saga service` processes; "
        f"medians of {s.reps} repetition{'s' if s.reps != 1 else ''}; sagas/s is the count "
        "over the time from the daemon's first claim to the last terminal write (both read "
        "from the log); audit violations are summed over every repetition.",
        "",
        table(settings, runs),
        "",
    ]
    crashed = [r for r in runs if r.kind is Kind.CRASHED and r.error is None]
    ratio = _med([_ratio(runs, r) for r in crashed])
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
            parts.append(f"- CPU, {r.kind.value}: {fmt_cpu(r.cpu)}")
    for r in runs:
        if r.error:
            parts += ["", f"{r.kind.value}, rep {r.rep} failed: `{r.error}`"]
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
        for kind in (Kind.CRASHED, Kind.FRESH):
            got = _measure(kind, rep, settings)
            runs.append(got)
            what = (
                f"failed: {got.error}"
                if got.error
                else f"{fmt_num(got.rate)} sagas/s, all terminal after "
                f"{fmt_num(got.all_terminal_s, 1)} s, {got.violations} violations"
            )
            progress(f"rep {rep}/{settings.reps}  {kind.value}: {what}")
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
