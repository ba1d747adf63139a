"""The end-to-end benchmark: `POST /orders` over HTTP to a durable 201, then the saga's
gRPC steps to its terminal status, on the real stack as `saga up` runs it (three
`saga service` processes, `saga gateway`, `saga recovery`, a private Redis for
idempotency), beside the same stack with the saga log in memory
(`SAGA_LOG_BACKEND=memory`, no daemon: nothing else can read that log), and beside the
ceiling (bench/ceiling.py: the same calls and writes without HTTP or engine), in one run.

Two load generators, each its own process, drive it: wrk (bench/wrk.py: what a user
would measure with a tool of their own) and bench/loadgen.py (which records every
answer, so it also gives the time to terminal of each order). One measurement (a fresh
data folder, fresh processes, every time):
- N connections each send their next order (its own idempotency key, one prod_1 at
  50.00) as soon as the previous one is answered, for warm-up + duration seconds;
- accepted orders/s counts the 201s (loadgen.py: answered in the window after the
  warm-up; wrk: over its whole run, which has no warm-up); finished sagas/s the sagas
  whose terminal status was written in that window;
- end-to-end orders/s is every order the gateway created ÷ the time from the load's
  start to the last terminal write, both read from the log afterwards: what the stack
  sustains when taking orders and driving their sagas share it (a gateway can accept
  faster than it finishes for a while: the surplus waits in the log);
- latency to 201 is the client's (send to last byte; wrk's covers every answer, so it is
  the 201's only when every answer was a 201: the report says when not); latency to
  terminal is the saga's terminal `updated_ms` minus the send time (loadgen.py only);
- CPU of every process (and of the processes under it): its share of a core during the
  load, and its CPU seconds from the load's start until every saga was terminal per
  1,000 orders created, the main figure (it moves less than wall time on a shared
  machine).

Every client, backend and the ceiling are measured at every concurrency in every
repetition, interleaved. The tables are bench/e2e_report.py.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Final

from bench import ceiling as ceiling_bench
from bench.ceiling import CeilingRun, CeilingSettings
from bench.cpu import StackCpu
from bench.e2e_report import (
    HEADER,
    OPEN_SHARE,
    Backend,
    Client,
    Run,
    chart,
    render,
    summarize,
    sustainable,
)
from bench.errors import BenchError
from bench.loadgen import CONNECT_ERROR, TIMEOUT, LoadChild, LoadResult, LoadSpec, Sample
from bench.measure import SETTLE_S, CpuMeter, OrderEnd, fetch_orders, wait_settled
from bench.pg import (
    DEFAULT_PG_URL,
    LEDGER_URL_VARS,
    count_sagas,
    fresh_database,
    ledger_rows,
)
from bench.report import fmt_ms, fmt_num, machine, percentile, write_outputs
from bench.stack import BenchStack
from bench.wrk import WrkFound, WrkResult, WrkSpec, find_wrk, run_wrk

__all__ = [
    "HEADER",
    "Backend",
    "Client",
    "E2eReport",
    "E2eSettings",
    "Run",
    "measure",
    "run",
]


@dataclass(frozen=True, slots=True)
class E2eSettings:
    concurrencies: tuple[int, ...] = (16, 64, 256)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    reps: int = 3
    clients: tuple[Client, ...] = (Client.WRK, Client.OWN)
    backends: tuple[Backend, ...] = (Backend.DURABLE, Backend.MEMORY)
    redis: bool = True
    daemon: bool = True  # a recovery daemon beside the durable gateway, as `saga up` runs
    ceiling: bool = True
    open_loop: bool = True  # open-loop runs per durable backend at shares of its rate
    # Shares of the closed-loop rate offered in the open loop; OPEN_SHARE is the target's.
    open_shares: tuple[float, ...] = (OPEN_SHARE,)
    # Sagas in flight in the ceiling: as many as the gateway drives at once by default
    # (SAGA_RUNNER_CAPACITY), however few connections bring them in.
    ceiling_concurrency: int = 256
    pg_url: str = DEFAULT_PG_URL  # where --backend postgres makes its fresh databases
    install_wrk: bool = True  # apt-get install wrk when it is missing and we are root
    chart: bool = True
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench e2e"

    @classmethod
    def quick(cls) -> E2eSettings:
        """A smoke run: proves the harness in seconds, measures nothing."""
        return cls(concurrencies=(4,), duration_s=1.0, warmup_s=0.2, reps=1, ceiling_concurrency=8)


def _answer(sample: Sample) -> str:
    names = {TIMEOUT: "client timeout", CONNECT_ERROR: "connection error"}
    return names.get(sample.status, f"{sample.status} {sample.error}".strip())


def _end_to_end(run: Run, ends: dict[str, OrderEnd], start_ms: float) -> Run:
    """Orders created, the end-to-end rate and what is still PENDING, from the log."""
    done = [e.updated_ms for e in ends.values() if e.status != "PENDING"]
    span_s = (max(done) - start_ms) / 1000 if done else 0.0
    return replace(
        run,
        orders=len(ends),
        e2e_per_s=len(ends) / span_s if span_s > 0 else None,
        unsettled=len(ends) - len(done),
    )


def _finished(ends: dict[str, OrderEnd], start_ms: float, lo: float, hi: float) -> int:
    return sum(
        1
        for e in ends.values()
        if e.status != "PENDING" and start_ms + 1000 * lo <= e.updated_ms < start_ms + 1000 * hi
    )


def _analyse_own(run: Run, load: LoadResult, ends: dict[str, OrderEnd], warmup_s: float) -> Run:
    lo, hi = warmup_s, warmup_s + run.window_s
    start_ms = load.started_wall_s * 1000
    ok = [s for s in load.samples if s.status == 201]
    sent_in_window = [s for s in ok if lo <= s.sent_s < hi]
    lat_end = [
        (ends[s.order_id].updated_ms - (start_ms + 1000 * s.sent_s)) / 1000
        for s in sent_in_window
        if s.order_id in ends and ends[s.order_id].status != "PENDING"
    ]
    lat_201 = [s.latency_s for s in sent_in_window]
    run = replace(
        run,
        accepted=sum(1 for s in ok if lo <= s.sent_s + s.latency_s < hi),
        finished=_finished(ends, start_ms, lo, hi),
        p50_201_s=percentile(lat_201, 50),
        p99_201_s=percentile(lat_201, 99),
        p50_terminal_s=percentile(lat_end, 50),
        p99_terminal_s=percentile(lat_end, 99),
        not_201=dict(Counter(_answer(s) for s in load.samples if s.status != 201)),
        client_cpu=load.cpu_seconds / load.seconds,
        client_cpu_s=load.cpu_seconds,
    )
    return _end_to_end(run, ends, start_ms)


_WRK_ERRORS: Final = {
    "connect": "connection error",
    "read": "read error",
    "write": "write error",
    "timeout": "client timeout",
}


def _analyse_wrk(run: Run, load: WrkResult, ends: dict[str, OrderEnd]) -> Run:
    start_ms = load.started_wall_s * 1000
    not_201 = {str(status): n for status, n in load.statuses.items() if status != 201}
    not_201 |= {_WRK_ERRORS.get(k, k): n for k, n in load.errors.items()}
    run = replace(
        run,
        window_s=load.seconds,
        accepted=load.ok,
        finished=_finished(ends, start_ms, 0.0, load.seconds),
        p50_201_s=load.p50_s,
        p99_201_s=load.p99_s,
        latency_of_all=not load.only_201,
        not_201=not_201,
        client_cpu=load.cpu_seconds / load.seconds if load.seconds else None,
        client_cpu_s=load.cpu_seconds,
    )
    return _end_to_end(run, ends, start_ms)


def measure(
    client: Client,
    backend: Backend,
    concurrency: int,
    rep: int,
    settings: E2eSettings,
    root: Path,
    *,
    wrk: str | None = None,
    database_url: str | None = None,
    gateway_env: dict[str, str] | None = None,
    rate: float | None = None,
) -> Run:
    """One measurement on a fresh stack in `root` (see the module's docstring); the saga
    log in `database_url` (PostgreSQL) when given."""
    run = Run(client, backend, concurrency, rep, settings.duration_s, rate=rate)
    memory = backend is Backend.MEMORY
    log_env = {"SAGA_DATABASE_URL": database_url} if database_url else {}
    # With Backend.POSTGRES the services' ledgers go there too: one database, a schema each.
    ledger_env: dict[str, str] = {}
    if database_url is not None and backend is Backend.POSTGRES:
        ledger_env = dict.fromkeys(LEDGER_URL_VARS, database_url)
    with BenchStack(root, redis=settings.redis) as stack:
        stack.env.update(ledger_env)
        stack.start_services()
        stack.start_gateway(memory=memory, **log_env, **(gateway_env or {}))
        if settings.daemon and not memory:
            stack.start_recovery(**log_env)
        during = CpuMeter(stack.processes())
        until_settled = StackCpu(stack.processes(), database_url)
        seconds = settings.warmup_s + settings.duration_s
        if client is Client.WRK:
            if wrk is None:
                raise BenchError("no wrk binary")
            spec = WrkSpec(stack.port, seconds, concurrency, key_prefix=f"wrk{rep}")
            calls_before = stack.service_calls()
            during.start()
            until_settled.start()
            wrk_result = run_wrk(spec, wrk, root)
        else:
            load_spec = LoadSpec(
                port=stack.port, duration_s=seconds, concurrency=concurrency, rate=rate
            )
            child = LoadChild(load_spec, root).start()
            calls_before = stack.service_calls()
            during.start()
            until_settled.start()
            own_result = child.result(timeout_s=seconds + 60)
        cores = during.stop()
        ended = time.perf_counter()
        settled = wait_settled(stack.url, SETTLE_S)
        until_settled.stop()
        settle_s = time.perf_counter() - ended
        calls_after = stack.service_calls()
        calls = {k: n - calls_before.get(k, 0) for k, n in calls_after.items()}
        ends = fetch_orders(stack.url)
        if not stack.gateway or not stack.gateway.alive:
            return replace(run, error="the gateway died")
    if database_url and ends and count_sagas(database_url) == 0:
        return replace(run, error="the gateway ignored SAGA_DATABASE_URL: no saga in it")
    if ledger_env and ends and not ledger_rows(database_url or ""):
        return replace(run, error="the services ignored their *_DATABASE_URL: no ledger row")
    run = replace(run, cpu=cores, cpu_s=until_settled.seconds, settle_s=settle_s, calls=calls)
    if client is Client.WRK:
        run = _analyse_wrk(run, wrk_result, ends)
    else:
        run = _analyse_own(run, own_result, ends, settings.warmup_s)
    if not settled:
        return replace(run, error=f"{run.unsettled} sagas not terminal {SETTLE_S:g}s after")
    if run.accepted == 0:
        return replace(run, error="no order was accepted")
    return run


def _measure(
    client: Client,
    backend: Backend,
    concurrency: int,
    rep: int,
    settings: E2eSettings,
    wrk: str | None,
    rate: float | None = None,
) -> Run:
    with contextlib.ExitStack() as resources:
        try:
            tmp = resources.enter_context(
                tempfile.TemporaryDirectory(prefix="saga-e2e-", dir=settings.data_dir)
            )
            url = None
            if backend.on_postgres:
                url = resources.enter_context(fresh_database(settings.pg_url))
            return measure(
                client,
                backend,
                concurrency,
                rep,
                settings,
                Path(tmp),
                wrk=wrk,
                database_url=url,
                rate=rate,
            )
        except (BenchError, RuntimeError, OSError) as exc:  # a process failed: say so, go on
            error = str(exc)[:500]
            window = settings.duration_s
            return Run(client, backend, concurrency, rep, window, rate=rate, error=error)


@dataclass(frozen=True, slots=True)
class E2eReport:
    settings: E2eSettings
    runs: tuple[Run, ...]
    ceilings: tuple[CeilingRun, ...]
    markdown: str
    files: tuple[Path, ...] = field(default=())


def _progress_line(got: Run) -> str:
    if got.error:
        return f"failed: {got.error}"
    return (
        f"{fmt_num(got.accepted_per_s)} accepted/s, {fmt_num(got.e2e_per_s)} end to end/s, "
        f"201 p99 {fmt_ms(got.p99_201_s)} ms, {fmt_num(got.stack_cpu_per_k, 2)} CPU s/1k"
    )


def _find_client(settings: E2eSettings, progress: Callable[[str], None]) -> WrkFound | None:
    if Client.WRK not in settings.clients:
        return None
    found = find_wrk(install=settings.install_wrk)
    progress(found.how if found.path else f"{found.how}: only bench/loadgen.py runs")
    return found


def run(settings: E2eSettings, progress: Callable[[str], None]) -> E2eReport:
    found = _find_client(settings, progress)
    wrk = found.path if found else None
    clients = [c for c in settings.clients if c is not Client.WRK or wrk]
    ceiling_settings = CeilingSettings(
        duration_s=settings.duration_s, warmup_s=settings.warmup_s, data_dir=settings.data_dir
    )
    runs: list[Run] = []
    ceilings: list[CeilingRun] = []
    for rep in range(1, settings.reps + 1):
        if settings.ceiling:
            c = settings.ceiling_concurrency
            got_ceiling = ceiling_bench.measure_fresh(c, rep, ceiling_settings)
            ceilings.append(got_ceiling)
            summary = ceiling_bench.summary(got_ceiling)
            progress(f"rep {rep}/{settings.reps}  c={c:<4} ceiling: {summary}")
        for c in settings.concurrencies:
            for client in clients:
                for backend in settings.backends:
                    got = _measure(client, backend, c, rep, settings, wrk)
                    runs.append(got)
                    what = _progress_line(got)
                    progress(f"rep {rep}/{settings.reps}  c={c:<4} {client} {backend}: {what}")
        if settings.open_loop:
            runs += _open_loop(settings, runs, rep, progress)
    rows = summarize(runs, ceilings)
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir, {"load generators": _clients_line(found, clients)})
    markdown = render(settings, rows, runs, ceilings, info)
    files = write_outputs(
        settings.out,
        "e2e",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[asdict(r) for r in runs] + [{"ceiling": asdict(r)} for r in ceilings],
        data_dir=data_dir,
    )
    png = chart(settings.out / "e2e.png", rows) if settings.chart else None
    if png is not None:
        files.append(png)
    return E2eReport(settings, tuple(runs), tuple(ceilings), markdown, tuple(files))


def _open_loop(
    settings: E2eSettings, runs: list[Run], rep: int, progress: Callable[[str], None]
) -> list[Run]:
    """Open-loop runs per durable backend at each share of its closed-loop rate in this
    repetition (issue 15: the 201's p99 at OPEN_SHARE, not at saturation; the other
    shares draw its latency against the load)."""
    got: list[Run] = []
    for backend in settings.backends:
        closed = sustainable(runs, backend, rep)
        if backend is Backend.MEMORY or closed is None:
            continue
        for share in settings.open_shares:
            rate = share * closed
            one = replace(
                _measure(Client.OWN, backend, 0, rep, settings, None, rate=rate), share=share
            )
            got.append(one)
            what = one.error or (
                f"{fmt_num(one.accepted_per_s)} 201s/s of {fmt_num(rate)} offered, "
                f"201 p99 {fmt_ms(one.p99_201_s)} ms"
            )
            progress(f"rep {rep}/{settings.reps}  open loop {share:.0%} {backend}: {what}")
    return got


def _clients_line(found: WrkFound | None, clients: list[Client]) -> str:
    parts = [found.how] if found else []
    if Client.OWN in clients:
        parts.append("bench/loadgen.py (asyncio, raw HTTP/1.1)")
    return ", ".join(parts) if parts else "none"
