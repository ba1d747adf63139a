"""What bench/e2e.py measured, summed up: one measurement (`Run`), the medians over
repetitions (`Row`), and the report's tables, targets and chart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench import ceiling as ceiling_bench
from bench.ceiling import CeilingRun
from bench.measure import SERVICES
from bench.report import (
    DASH,
    Series,
    fmt_ms,
    fmt_num,
    fmt_ratio,
    markdown_table,
    median,
    write_chart,
)

if TYPE_CHECKING:
    from bench.e2e import E2eSettings

__all__ = [
    "CPU_HEADER",
    "HEADER",
    "OPEN_HEADER",
    "SERVICE_HEADER",
    "Backend",
    "Client",
    "Row",
    "Run",
    "chart",
    "render",
    "summarize",
]

# Targets (this 2-core machine), at TARGET_CONCURRENCY connections: the durable stack at
# least this share of the in-memory stack's rate and of the ceiling's (issue 15), the
# 201's p99 under this many seconds, and this many end-to-end orders/s (issue 15's goal).
TARGET_VS_MEMORY: Final = 0.80
TARGET_VS_CEILING: Final = 0.60
TARGET_P99_S: Final = 0.025
TARGET_E2E_PER_S: Final = 1000.0
TARGET_PG_VS_SQLITE: Final = 0.80  # issue 14: the PostgreSQL log end to end vs SQLite's
TARGET_CONCURRENCY: Final = 64
# Issue 15: in an open loop at OPEN_SHARE of the sustainable rate, the 201's p99 under this.
TARGET_OPEN_P99_S: Final = 0.020
OPEN_SHARE: Final = 0.8
# The stack's processes, in the CPU table's order (the load generator is apart);
# postgres: the database server's backends serving the stack (bench/pg.py).
PROCESSES: Final = (
    "gateway",
    "recovery",
    "order",
    "payment",
    "inventory",
    "redis",
    "postgres",
)


class Backend(StrEnum):
    DURABLE = "SQLite log (FULL)"
    POSTGRES = "PostgreSQL log + ledgers"
    PG_LOG = "PostgreSQL log, SQLite ledgers"

    @property
    def on_postgres(self) -> bool:
        return self in (Backend.POSTGRES, Backend.PG_LOG)

    MEMORY = "in-memory log"


class Client(StrEnum):
    WRK = "wrk"
    OWN = "loadgen.py"


@dataclass(frozen=True, slots=True)
class Run:
    """One measurement of one client and backend at one concurrency in one repetition."""

    client: Client
    backend: Backend
    concurrency: int
    rep: int
    window_s: float
    accepted: int = 0  # 201s answered in the window
    finished: int = 0  # sagas that reached their terminal status in the window
    orders: int = 0  # orders the gateway created over the whole run (read from the log)
    e2e_per_s: float | None = None  # orders ÷ (last terminal write - load start)
    p50_201_s: float | None = None
    p99_201_s: float | None = None
    latency_of_all: bool = False  # wrk: the percentiles cover answers other than 201 too
    p50_terminal_s: float | None = None
    p99_terminal_s: float | None = None
    not_201: dict[str, int] = field(default_factory=dict)  # other answers, whole run
    unsettled: int = 0  # sagas still not terminal SETTLE_S after the load
    settle_s: float = 0.0  # from the end of the load until every saga was terminal
    cpu: dict[str, float] = field(default_factory=dict)  # cores used during the load
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU s, load start → settled
    client_cpu: float | None = None  # the load generator's cores
    client_cpu_s: float | None = None  # its CPU seconds
    calls: dict[str, int] = field(default_factory=dict)  # RPCs each service answered, ditto
    rate: float | None = None  # open loop (loadgen.py): orders offered per second
    share: float | None = None  # open loop: `rate` as a share of the closed-loop rate
    error: str | None = None

    @property
    def accepted_per_s(self) -> float | None:
        return None if self.error else self.accepted / self.window_s

    @property
    def finished_per_s(self) -> float | None:
        return None if self.error else self.finished / self.window_s

    def cpu_per_k(self, name: str) -> float | None:
        """CPU seconds of one process per 1,000 orders created."""
        if self.error or not self.orders or name not in self.cpu_s:
            return None
        return 1000 * self.cpu_s[name] / self.orders

    def us_per_call(self, service: str) -> float | None:
        """A service's CPU microseconds per RPC it answered (load start → settled)."""
        if self.error or not self.calls.get(service) or service not in self.cpu_s:
            return None
        return 1e6 * self.cpu_s[service] / self.calls[service]

    @property
    def stack_cpu_per_k(self) -> float | None:
        if self.error or not self.orders:
            return None
        return 1000 * sum(self.cpu_s.values()) / self.orders

    @property
    def client_cpu_per_k(self) -> float | None:
        if self.error or not self.orders or self.client_cpu_s is None:
            return None
        return 1000 * self.client_cpu_s / self.orders


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over repetitions for one client and backend at one concurrency."""

    client: Client
    backend: Backend
    concurrency: int
    accepted_per_s: float | None
    finished_per_s: float | None
    e2e_per_s: float | None
    p50_201_s: float | None
    p99_201_s: float | None
    p50_terminal_s: float | None
    p99_terminal_s: float | None
    stack_cpu_per_k: float | None
    client_cpu: float | None
    vs_memory: float | None  # end-to-end orders/s over the in-memory stack's, same rep
    accepted_vs_memory: float | None  # accepted orders/s, likewise
    vs_ceiling: float | None  # end-to-end orders/s over the ceiling's sagas/s, same rep
    cpu_vs_ceiling: float | None  # stack CPU per order over the ceiling's per saga, likewise
    vs_sqlite: float | None  # PostgreSQL rows: end-to-end orders/s over the SQLite log's
    cpu_per_k: dict[str, float | None]  # by process, and "load generator"
    latency_of_all: bool
    not_201: dict[str, int]
    errors: tuple[str, ...] = ()
    us_per_call: dict[str, float | None] = field(default_factory=dict)  # by service
    calls_per_order: dict[str, float | None] = field(default_factory=dict)  # by service


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _vs(
    runs: Sequence[Run], of: Run, to: Backend, rate: Callable[[Run], float | None]
) -> float | None:
    """`of`'s rate over backend `to`'s, same client, concurrency and repetition."""
    for other in runs:
        if (other.client, other.backend, other.concurrency, other.rep) == (
            of.client,
            to,
            of.concurrency,
            of.rep,
        ):
            a, b = rate(of), rate(other)
            return None if a is None or not b else a / b
    return None


def _ceiling(ceilings: Sequence[CeilingRun], of: Run) -> CeilingRun | None:
    """The ceiling measured in the same repetition (at the gateway's capacity)."""
    return next((c for c in ceilings if c.rep == of.rep and c.error is None), None)


def _vs_ceiling(ceilings: Sequence[CeilingRun], of: Run) -> float | None:
    c = _ceiling(ceilings, of)
    if c is None or of.e2e_per_s is None or not c.rate:
        return None
    return of.e2e_per_s / c.rate


def _cpu_vs_ceiling(ceilings: Sequence[CeilingRun], of: Run) -> float | None:
    c = _ceiling(ceilings, of)
    mine, its = of.stack_cpu_per_k, c.stack_cpu_per_k if c else None
    return None if mine is None or not its else mine / its


def _e2e(r: Run) -> float | None:
    return None if r.error else r.e2e_per_s


def _accepted(r: Run) -> float | None:
    return r.accepted_per_s


def _calls_per_order(r: Run, service: str) -> float | None:
    return r.calls[service] / r.orders if r.orders and service in r.calls else None


def summarize(runs: Sequence[Run], ceilings: Sequence[CeilingRun] = ()) -> tuple[Row, ...]:
    rows: list[Row] = []
    for client in Client:
        for backend in Backend:
            mine_all = [
                r for r in runs if (r.client, r.backend) == (client, backend) and r.rate is None
            ]
            for c in sorted({r.concurrency for r in mine_all}):
                mine = [r for r in mine_all if r.concurrency == c]
                ok = [r for r in mine if r.error is None]
                memory = backend is Backend.MEMORY
                cpu: dict[str, float | None] = {
                    p: _med([r.cpu_per_k(p) for r in ok]) for p in PROCESSES
                }
                cpu["load generator"] = _med([r.client_cpu_per_k for r in ok])
                rows.append(
                    Row(
                        client,
                        backend,
                        c,
                        _med([r.accepted_per_s for r in ok]),
                        _med([r.finished_per_s for r in ok]),
                        _med([r.e2e_per_s for r in ok]),
                        _med([r.p50_201_s for r in ok]),
                        _med([r.p99_201_s for r in ok]),
                        _med([r.p50_terminal_s for r in ok]),
                        _med([r.p99_terminal_s for r in ok]),
                        _med([r.stack_cpu_per_k for r in ok]),
                        _med([r.client_cpu for r in ok]),
                        None if memory else _med([_vs(runs, r, Backend.MEMORY, _e2e) for r in ok]),
                        None
                        if memory
                        else _med([_vs(runs, r, Backend.MEMORY, _accepted) for r in ok]),
                        _med([_vs_ceiling(ceilings, r) for r in ok]),
                        _med([_cpu_vs_ceiling(ceilings, r) for r in ok]),
                        _med([_vs(runs, r, Backend.DURABLE, _e2e) for r in ok])
                        if backend.on_postgres
                        else None,
                        cpu,
                        any(r.latency_of_all for r in ok),
                        dict(sum((Counter(r.not_201) for r in mine), Counter())),
                        tuple(sorted({r.error for r in mine if r.error})),
                        {p: _med([r.us_per_call(p) for r in ok]) for p in SERVICES},
                        {p: _med([_calls_per_order(r, p) for r in ok]) for p in SERVICES},
                    )
                )
    return tuple(rows)


HEADER: Final = (
    "load generator",
    "saga log",
    "concurrency",
    "accepted orders/s",
    "sagas finished/s",
    "end-to-end orders/s",
    "201 p50 (ms)",
    "201 p99 (ms)",
    "terminal p50 (ms)",
    "terminal p99 (ms)",
    "stack CPU s/1k orders",
    "client CPU",
    "vs in-memory (end to end)",
    "vs in-memory (accepted)",
    "vs ceiling (end to end)",
)
CPU_HEADER: Final = (
    "load generator",
    "saga log",
    "concurrency",
    *PROCESSES,
    "whole stack",
    "vs ceiling",
    "the load generator",
)


def _pct(cores: float | None) -> str:
    return DASH if cores is None else f"{100 * cores:.0f}%"


def _lat(r: Row, seconds: float | None) -> str:
    return fmt_ms(seconds) + ("*" if r.latency_of_all and seconds is not None else "")


def table(rows: Sequence[Row]) -> str:
    cells = [
        [
            r.client.value,
            r.backend.value,
            str(r.concurrency),
            fmt_num(r.accepted_per_s) if r.accepted_per_s is not None else "failed",
            fmt_num(r.finished_per_s),
            fmt_num(r.e2e_per_s),
            _lat(r, r.p50_201_s),
            _lat(r, r.p99_201_s),
            fmt_ms(r.p50_terminal_s),
            fmt_ms(r.p99_terminal_s),
            fmt_num(r.stack_cpu_per_k, 2),
            _pct(r.client_cpu),
            fmt_ratio(r.vs_memory),
            fmt_ratio(r.accepted_vs_memory),
            fmt_ratio(r.vs_ceiling),
        ]
        for r in rows
    ]
    return markdown_table(HEADER, cells)


def cpu_table(rows: Sequence[Row]) -> str:
    cells = [
        [
            r.client.value,
            r.backend.value,
            str(r.concurrency),
            *(fmt_num(r.cpu_per_k.get(p), 2) for p in PROCESSES),
            fmt_num(r.stack_cpu_per_k, 2),
            fmt_ratio(r.cpu_vs_ceiling),
            fmt_num(r.cpu_per_k.get("load generator"), 2),
        ]
        for r in rows
    ]
    return markdown_table(CPU_HEADER, cells)


SERVICE_HEADER: Final = (
    "load generator",
    "saga log",
    "concurrency",
    *(f"{s} CPU µs/call" for s in SERVICES),
    *(f"{s} calls/order" for s in SERVICES),
)


def service_table(rows: Sequence[Row]) -> str:
    cells = [
        [
            r.client.value,
            r.backend.value,
            str(r.concurrency),
            *(fmt_num(r.us_per_call.get(s)) for s in SERVICES),
            *(fmt_num(r.calls_per_order.get(s), 2) for s in SERVICES),
        ]
        for r in rows
    ]
    return markdown_table(SERVICE_HEADER, cells)


OPEN_HEADER: Final = (
    "saga log",
    "rep",
    "share",
    "closed-loop orders/s",
    "offered orders/s",
    "201s/s achieved",
    "201 p50 (ms)",
    "201 p99 (ms)",
    "terminal p99 (ms)",
    "stack CPU s/1k orders",
    "answers other than 201",
)


def sustainable(runs: Sequence[Run], backend: Backend, rep: int) -> float | None:
    """The backend's sustainable rate in repetition `rep`: its best end-to-end orders/s
    in the closed loop, over clients and concurrencies."""
    rates = [
        r.e2e_per_s
        for r in runs
        if (r.backend, r.rep) == (backend, rep) and r.rate is None and r.e2e_per_s
    ]
    return max(rates) if rates else None


def open_table(runs: Sequence[Run]) -> str:
    cells = [
        [
            r.backend.value,
            str(r.rep),
            f"{_share(r):.0%}",
            fmt_num((r.rate or 0.0) / _share(r)),
            fmt_num(r.rate),
            fmt_num(r.accepted_per_s),
            fmt_ms(r.p50_201_s),
            fmt_ms(r.p99_201_s),
            fmt_ms(r.p99_terminal_s),
            fmt_num(r.stack_cpu_per_k, 2),
            ", ".join(f"{n:,} {k}" for k, n in sorted(r.not_201.items())) or "none",
        ]
        for r in runs
        if r.rate is not None
    ]
    return markdown_table(OPEN_HEADER, cells)


def _share(run: Run) -> float:
    """The run's open-loop share (a report written before shares could vary: OPEN_SHARE)."""
    return OPEN_SHARE if run.share is None else run.share


def open_verdict(runs: Sequence[Run]) -> list[str]:
    lines = []
    for backend in Backend:
        p99s = [
            r.p99_201_s
            for r in runs
            if r.rate and _share(r) == OPEN_SHARE and r.backend is backend and r.p99_201_s
        ]
        if p99s:
            p99 = median(p99s) or 0.0
            lines.append(
                f"Target: in the open loop at {OPEN_SHARE:.0%} of the sustainable rate, the "
                f"201's p99 under {1000 * TARGET_OPEN_P99_S:g} ms ({backend.value}, median "
                f"of {len(p99s)}): {fmt_ms(p99)} ms → **{_met(p99 < TARGET_OPEN_P99_S)}**."
            )
    return lines


def _target(rows: Sequence[Row], backend: Backend = Backend.DURABLE) -> Row | None:
    """The backend's row at the target concurrency, wrk's when there is one."""
    for client in (Client.WRK, Client.OWN):
        for r in rows:
            key = (r.client, r.backend, r.concurrency)
            if key == (client, backend, TARGET_CONCURRENCY) and r.e2e_per_s:
                return r
    return None


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def verdict(rows: Sequence[Row]) -> list[str]:
    durable = _target(rows)
    if durable is None or durable.e2e_per_s is None:
        return [f"Targets (at concurrency {TARGET_CONCURRENCY}): not measured in this run."]
    at = f"at concurrency {TARGET_CONCURRENCY} ({durable.client.value})"
    lines = [
        f"Goal: at least {fmt_num(TARGET_E2E_PER_S)} end-to-end orders/s {at}: "
        f"{fmt_num(durable.e2e_per_s)} → **{_met(durable.e2e_per_s >= TARGET_E2E_PER_S)}**."
    ]
    if durable.vs_ceiling is not None:
        lines.append(
            f"Target: the durable stack {at} at least {TARGET_VS_CEILING:.1f}x the ceiling "
            f"(its calls and writes alone): {fmt_ratio(durable.vs_ceiling)} → "
            f"**{_met(durable.vs_ceiling >= TARGET_VS_CEILING)}**."
        )
    if durable.vs_memory is not None:
        lines.append(
            f"Target: the durable stack {at} at least {TARGET_VS_MEMORY:.0%} of the in-memory "
            f"stack's end-to-end orders/s: {durable.vs_memory:.0%} → "
            f"**{_met(durable.vs_memory >= TARGET_VS_MEMORY)}** (accepted orders/s: "
            f"{fmt_ratio(durable.accepted_vs_memory)})."
        )
    if durable.p99_201_s is not None:
        lines.append(
            f"Target: the 201's p99 under {1000 * TARGET_P99_S:g} ms {at}: "
            f"{fmt_ms(durable.p99_201_s)} ms → **{_met(durable.p99_201_s < TARGET_P99_S)}**."
        )
    # Issue 14's target is the saga log's: the services keep their SQLite ledgers.
    pg = _target(rows, Backend.PG_LOG)
    if pg is not None and pg.vs_sqlite is not None:
        lines.append(
            f"Target: the PostgreSQL log at concurrency {TARGET_CONCURRENCY} "
            f"({pg.client.value}) at least {TARGET_PG_VS_SQLITE:.1f}x the SQLite log end to "
            f"end: {fmt_num(pg.e2e_per_s)} orders/s, {fmt_ratio(pg.vs_sqlite)} → "
            f"**{_met(pg.vs_sqlite >= TARGET_PG_VS_SQLITE)}**."
        )
    return lines


def render(
    settings: E2eSettings,
    rows: Sequence[Row],
    runs: Sequence[Run],
    ceilings: Sequence[CeilingRun],
    info: dict[str, str],
) -> str:
    s = settings
    redis = "a private redis-server as the idempotency cache" if s.redis else "no Redis"
    daemon = ", `saga recovery` beside the durable gateway" if s.daemon else ""
    parts = [
        "## End-to-end benchmark",
        "",
        f"`{s.command}`: closed-loop HTTP clients (each connection sends its next `POST "
        f"/orders` when the previous one is answered) for {s.warmup_s + s.duration_s:g} s "
        f"(loadgen.py counts the last {s.duration_s:g} s; wrk's whole run is counted), on "
        f"three `saga service` processes, `saga gateway`{daemon} and {redis}; every cell is "
        f"the median of {s.reps} repetition{'s' if s.reps != 1 else ''} (ratios: median of "
        "the ratios within each repetition). End-to-end orders/s: orders created ÷ (last "
        "terminal write - first POST), from the log. Stack CPU s/1k orders: CPU seconds of "
        "every process of the stack from the first POST until every saga was terminal, "
        "per 1,000 orders. Client CPU: the load generator's share of one core.",
        "",
        table(rows),
        "",
        *verdict(rows),
    ]
    if any(r.latency_of_all for r in rows):
        parts += [
            "",
            "\\* wrk's latency histogram holds every answer, and some were not 201s (below): "
            "these percentiles are of all answers.",
        ]
    parts += [
        "",
        "CPU seconds per 1,000 orders, by process (from the first POST until every saga "
        "was terminal; the gateway with any process under it; postgres: the server's "
        "backends serving the stack's database; vs ceiling: the whole stack's over the "
        "ceiling's CPU per saga):",
        "",
        cpu_table(rows),
        "",
        "Each service's CPU per call it answered, its ledger on SQLite (beside the SQLite "
        "or the in-memory log) and on PostgreSQL (with the PostgreSQL log: `ORDER_/PAYMENT_/"
        "INVENTORY_DATABASE_URL` all the run's fresh database, a schema each): its CPU "
        "seconds from the first POST until every saga was terminal ÷ the RPCs it answered "
        "meanwhile (its `saga_service_rpc_total`); the database server's share is in the "
        "postgres column above, not here:",
        "",
        service_table(rows),
    ]
    if any(r.rate is not None for r in runs):
        parts += [
            "",
            f"Open loop (bench/loadgen.py, which has a fixed arrival rate: each order is "
            f"sent at its time whatever the earlier ones are doing, on an idle connection or "
            f"a new one): a share (the target's is {OPEN_SHARE:.0%}) of the closed-loop rate "
            "measured in the same repetition (the backend's best end-to-end orders/s over "
            "clients and concurrencies) offered for the same warm-up and duration, on a fresh "
            "stack; 201s/s achieved and the percentiles count the window after the warm-up; "
            "latency is from the send, so a client that falls behind its schedule would "
            "hide some (its CPU is in the report's JSON):",
            "",
            open_table(runs),
            "",
            *open_verdict(runs),
        ]
    if ceilings:
        parts += [
            "",
            f"{ceiling_bench.describe(ceilings)} Measured once per repetition with "
            f"{ceilings[0].concurrency} sagas in flight (the gateway's default "
            "SAGA_RUNNER_CAPACITY: as many as it drives at once, however few connections "
            "bring them in), the same duration.",
            "",
            ceiling_bench.table(ceilings),
        ]
    for row in rows:
        if row.not_201:
            what = ", ".join(f"{n:,} {k}" for k, n in sorted(row.not_201.items()))
            parts += [
                "",
                f"Answers other than 201, {row.client.value}, {row.backend.value} at "
                f"{row.concurrency} (all repetitions): {what}.",
            ]
    for row in rows:
        for e in row.errors:
            where = f"{row.client.value}, {row.backend.value} at {row.concurrency}"
            parts += ["", f"{where} failed: `{e}`"]
    for c in ceilings:
        if c.error:
            parts += ["", f"ceiling at {c.concurrency}, rep {c.rep} failed: `{c.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


def chart(path: Path, rows: Sequence[Row]) -> Path | None:
    pairs = sorted({(r.client, r.backend) for r in rows})
    series = [
        Series(
            f"{client.value}, {backend.value}: end-to-end orders/s",
            tuple(
                (float(r.concurrency), r.e2e_per_s)
                for r in rows
                if (r.client, r.backend) == (client, backend)
            ),
        )
        for client, backend in pairs
    ]
    return write_chart(
        path,
        series,
        title="POST /orders to terminal saga: throughput vs concurrent clients",
        xlabel="concurrent HTTP connections",
        ylabel="orders/s (median)",
    )
