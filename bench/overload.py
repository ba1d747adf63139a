"""The overload benchmark: twice the sustainable rate offered for a while, on the real
stack (three services, the gateway with a configured `SAGA_MAX_QUEUE`, a private Redis).

One repetition, on one fresh stack:
1. sustainable rate: closed-loop clients for a while, then every saga to its end; the
   rate is the orders accepted ÷ (last terminal write - first send): what the stack
   finishes per second when intake and processing share it (bench/measure.py);
2. overload: an open-loop load (orders arrive at a fixed rate whatever the gateway
   answers) at `factor` times that rate, for `overload_s`; the gateway's RSS
   (/proc/PID/status) and the queue's depth (sagas waiting in the log) are sampled;
3. then the gateway is SIGKILLed, as it stands, queue full, and one `saga recovery`
   finishes what it left: every 201 must be in the log and end, and `orders.audit`
   judges every invariant of the contract.

It also reads from the log how the queue behaved: how many accepted sagas waited in the
log, whether they were claimed oldest first, and how many newer sagas went straight to
the runner while older ones still waited ("queue jumps").
"""

from __future__ import annotations

import bisect
import itertools
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench.loadgen import CLIENT_FULL, CONNECT_ERROR, TIMEOUT, LoadChild, LoadResult, LoadSpec
from bench.measure import fetch_orders, wait_settled
from bench.report import fmt_ms, fmt_num, machine, markdown_table, percentile, write_outputs
from bench.stack import BenchStack
from engine.core import ACTIVE_STATUSES
from engine.sqlite import DbConfig, open_connection
from orders.audit import audit
from orders.audit_io import read_snapshot
from orders.participants import ServiceAddresses
from saga.children import Child

__all__ = ["OverloadReport", "OverloadSettings", "Run", "run"]

MIB: Final = 1024 * 1024
_ACTIVE: Final = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    factor: float = 2.0  # offered load ÷ sustainable rate
    overload_s: float = 25.0
    sustain_s: float = 10.0
    sustain_concurrency: int = 16
    max_queue: int = 2_000  # SAGA_MAX_QUEUE of the gateway
    client_timeout_s: float = 10.0
    max_connections: int = 2_048
    reps: int = 1
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench overload"

    @classmethod
    def quick(cls) -> OverloadSettings:
        return cls(overload_s=1.5, sustain_s=1.0, sustain_concurrency=4, max_queue=20)


@dataclass(frozen=True, slots=True)
class Run:
    rep: int
    sustainable_per_s: float | None = None
    offered_per_s: float | None = None
    offered: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "201", "503 overloaded", ...
    retry_after_503: int = 0  # 503 overloaded answers carrying Retry-After
    p50_201_s: float | None = None
    p99_201_s: float | None = None
    p99_503_s: float | None = None
    client_cpu: float | None = None
    rss_start: int = 0
    rss_max: int = 0
    rss_end: int = 0
    rss_first_half_max: int = 0
    rss_second_half_max: int = 0
    queue_max: int = 0
    waited_in_log: int = 0  # accepted sagas that waited in the log for a runner slot
    claim_inversions: int = 0  # a waiting saga claimed before an older one
    queue_jumps: int = 0  # sagas driven at once while an older one waited in the log
    lost: int = 0  # 201s whose saga is not in the log, or not terminal, after recovery
    violations: int | None = None
    error: str | None = None

    @property
    def bounded(self) -> bool:
        """RSS in the second half of the overload grew by at most 5% (or 8 MiB) over the
        first half's peak."""
        slack = max(8 * MIB, self.rss_first_half_max // 20)
        return self.rss_second_half_max <= self.rss_first_half_max + slack


def _status_key(status: int, error: str) -> str:
    if status == TIMEOUT:
        return "client timeout"
    if status == CONNECT_ERROR:
        return "connection error"
    if status == CLIENT_FULL:
        return "not sent (client at max connections)"
    return f"{status} {error}".strip()


class _Sampler:
    """Samples the gateway's RSS and the queue depth every `every_s` in a thread."""

    def __init__(self, gateway: Child, log_path: Path, every_s: float = 0.25) -> None:
        self._gateway = gateway
        self._log_path = log_path
        self._every_s = every_s
        self._stop = threading.Event()
        self.rss: list[tuple[float, int]] = []
        self.queue: list[int] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        conn = open_connection(DbConfig(self._log_path, readonly=True))
        try:
            while not self._stop.is_set():
                rss = self._gateway.rss_bytes()
                if rss is not None:
                    self.rss.append((time.perf_counter(), rss))
                row = conn.execute(
                    f"SELECT count(*) FROM sagas WHERE status IN ({_ACTIVE}) "
                    "AND lease_expires_ms < ?",
                    (int(time.time() * 1000),),
                ).fetchone()
                self.queue.append(int(row[0]) if row else 0)
                self._stop.wait(self._every_s)
        finally:
            conn.close()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def _queue_behaviour(log_path: Path) -> tuple[int, int, int]:
    """(waited in the log, claims out of creation order, queue jumps), from the log."""
    conn = open_connection(DbConfig(log_path, readonly=True))
    try:
        rows = conn.execute(
            "SELECT s.seq, s.created_ms, "
            "(SELECT phase FROM transitions t WHERE t.saga_seq = s.seq AND t.n = 2), "
            "(SELECT at_ms FROM transitions t WHERE t.saga_seq = s.seq AND t.n = 2) "
            "FROM sagas s ORDER BY s.seq"
        ).fetchall()
    finally:
        conn.close()
    # (created, claimed) of each saga whose first move was a claim: it waited in the log
    waited = [(_int(r[1]), _int(r[3])) for r in rows if r[2] == "claimed"]
    direct = [_int(r[1]) for r in rows if r[2] is not None and r[2] != "claimed"]
    inversions = sum(1 for a, b in itertools.pairwise(waited) if b[1] < a[1])
    # A direct start at t jumped the queue if an older saga was still waiting at t.
    created = [c for c, _ in waited]
    latest_claim: list[int] = []
    for _, claimed in waited:
        latest_claim.append(max(claimed, latest_claim[-1]) if latest_claim else claimed)
    jumps = 0
    for t in direct:
        i = bisect.bisect_left(created, t) - 1
        if i >= 0 and latest_claim[i] > t:
            jumps += 1
    return len(waited), inversions, jumps


def _sustainable(load: LoadResult, ends: dict[str, int]) -> float | None:
    ids = [s.order_id for s in load.samples if s.status == 201]
    done = [ends[i] for i in ids if i in ends]
    if not done:
        return None
    span = max(done) / 1000 - load.started_wall_s
    return len(done) / span if span > 0 else None


def measure(rep: int, settings: OverloadSettings, root: Path) -> Run:
    s = settings
    with BenchStack(root, redis=True) as stack:
        stack.start_services()
        gateway = stack.start_gateway(SAGA_MAX_QUEUE=str(s.max_queue), SAGA_LEASE_S="3")
        # 1. what the stack sustains, intake and processing together
        warm = LoadChild(
            LoadSpec(port=stack.port, duration_s=s.sustain_s, concurrency=s.sustain_concurrency),
            root,
            "sustain",
        ).start()
        first = warm.result(timeout_s=s.sustain_s + 60)
        if not wait_settled(stack.url, 120):
            return Run(rep, error="the sustained load did not settle in 120 s")
        ends = {k: v.updated_ms for k, v in fetch_orders(stack.url).items()}
        sustainable = _sustainable(first, ends)
        if sustainable is None:
            return Run(rep, error="no order finished in the sustained phase")
        # 2. twice that, open loop
        rate = s.factor * sustainable
        spec = LoadSpec(
            port=stack.port,
            duration_s=s.overload_s,
            rate=rate,
            max_connections=s.max_connections,
            timeout_s=s.client_timeout_s,
            key_prefix="over",
        )
        rss_start = gateway.rss_bytes() or 0
        with _Sampler(gateway, stack.log_path) as sampler:
            t0 = time.perf_counter()
            load = LoadChild(spec, root, "overload").start().result(s.overload_s + 120)
            t1 = t0 + s.overload_s
        # 3. SIGKILL the gateway as it stands; a recovery daemon finishes its work
        gateway.kill()
        stack.start_recovery(SAGA_RECOVERY_INTERVAL_S="0.5", SAGA_LEASE_S="3")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and _active(stack.log_path):
            time.sleep(0.25)
        report = audit(read_snapshot(stack.log_path, ServiceAddresses.from_env(stack.env)))
        lost = _lost(stack.log_path, load)
        waited, inversions, jumps = _queue_behaviour(stack.log_path)
    rss = [r for _, r in sampler.rss]
    mid = t0 + (t1 - t0) / 2
    first_half = [r for t, r in sampler.rss if t0 <= t < mid] or [rss_start]
    second_half = [r for t, r in sampler.rss if mid <= t <= t1] or [rss_start]
    counts = Counter(_status_key(x.status, x.error) for x in load.samples)
    lat_201 = [x.latency_s for x in load.samples if x.status == 201]
    lat_503 = [x.latency_s for x in load.samples if x.status == 503]
    return Run(
        rep,
        sustainable_per_s=sustainable,
        offered_per_s=rate,
        offered=len(load.samples),
        statuses=dict(sorted(counts.items())),
        retry_after_503=sum(
            1 for x in load.samples if x.status == 503 and x.error == "overloaded" and x.retry_after
        ),
        p50_201_s=percentile(lat_201, 50),
        p99_201_s=percentile(lat_201, 99),
        p99_503_s=percentile(lat_503, 99),
        client_cpu=load.cpu_seconds / load.seconds,
        rss_start=rss_start,
        rss_max=max(rss, default=rss_start),
        rss_end=rss[-1] if rss else rss_start,
        rss_first_half_max=max(first_half),
        rss_second_half_max=max(second_half),
        queue_max=max(sampler.queue, default=0),
        waited_in_log=waited,
        claim_inversions=inversions,
        queue_jumps=jumps,
        lost=lost,
        violations=len(report.violations),
    )


def _active(log_path: Path) -> bool:
    conn = open_connection(DbConfig(log_path, readonly=True))
    try:
        row = conn.execute(f"SELECT count(*) FROM sagas WHERE status IN ({_ACTIVE})").fetchone()
    finally:
        conn.close()
    return bool(row and row[0])


def _lost(log_path: Path, load: LoadResult) -> int:
    accepted = {x.order_id for x in load.samples if x.status == 201}
    conn = open_connection(DbConfig(log_path, readonly=True))
    try:
        done = {
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM sagas WHERE status IN ('COMPLETED', 'COMPENSATED')"
            )
        }
    finally:
        conn.close()
    return len(accepted - done)


def _measure(rep: int, settings: OverloadSettings) -> Run:
    with tempfile.TemporaryDirectory(prefix="saga-overload-", dir=settings.data_dir) as tmp:
        try:
            return measure(rep, settings, Path(tmp))
        except (RuntimeError, OSError) as exc:
            return Run(rep, error=str(exc)[:500])


def _other_5xx(key: str) -> bool:
    return key.startswith("5") and key != "503 overloaded"


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}"


def table(runs: Sequence[Run]) -> str:
    def row(name: str, cell: Callable[[Run], str]) -> list[str]:
        return [name, *(cell(r) for r in runs)]

    def count(key: str) -> Callable[[Run], str]:
        return lambda r: fmt_num(r.statuses.get(key, 0))

    def other_5xx(r: Run) -> str:
        return fmt_num(sum(n for k, n in r.statuses.items() if _other_5xx(k)))

    def any_4xx(r: Run) -> str:
        return fmt_num(sum(n for k, n in r.statuses.items() if k.startswith("4")))

    def accepted_per_s(r: Run) -> str:
        seconds = r.offered / r.offered_per_s if r.offered_per_s else 0.0
        return fmt_num(r.statuses.get("201", 0) / seconds if seconds else None)

    rows = [
        row("sustainable rate (orders/s, measured first)", lambda r: fmt_num(r.sustainable_per_s)),
        row("offered (orders/s, open loop)", lambda r: fmt_num(r.offered_per_s)),
        row("offered (orders)", lambda r: fmt_num(r.offered)),
        row("201 accepted", count("201")),
        row("accepted orders/s", accepted_per_s),
        row("503 overloaded", count("503 overloaded")),
        row("… of which with Retry-After", lambda r: fmt_num(r.retry_after_503)),
        row("other 5xx", other_5xx),
        row("4xx", any_4xx),
        row("client timeouts", count("client timeout")),
        row("connection errors", count("connection error")),
        row("201 p50 / p99 (ms)", lambda r: f"{fmt_ms(r.p50_201_s)} / {fmt_ms(r.p99_201_s)}"),
        row("503 p99 (ms)", lambda r: fmt_ms(r.p99_503_s)),
        row(
            "gateway RSS start / max / end (MiB)",
            lambda r: f"{_mib(r.rss_start)} / {_mib(r.rss_max)} / {_mib(r.rss_end)}",
        ),
        row(
            "RSS peak, 1st half / 2nd half (MiB)",
            lambda r: f"{_mib(r.rss_first_half_max)} / {_mib(r.rss_second_half_max)}",
        ),
        row("queue depth max (sagas waiting in the log)", lambda r: fmt_num(r.queue_max)),
        row("accepted sagas that waited in the log", lambda r: fmt_num(r.waited_in_log)),
        row("… claimed out of creation order", lambda r: fmt_num(r.claim_inversions)),
        row("sagas started while an older one waited", lambda r: fmt_num(r.queue_jumps)),
        row("201s not terminal after SIGKILL + recovery", lambda r: fmt_num(r.lost)),
        row("audit violations", lambda r: "—" if r.violations is None else fmt_num(r.violations)),
        row("load generator CPU", lambda r: f"{100 * (r.client_cpu or 0):.0f}%"),
    ]
    return markdown_table(("", *(f"rep {r.rep}" for r in runs)), rows)


def verdict(runs: Sequence[Run]) -> list[str]:
    ok = [r for r in runs if r.error is None]
    if not ok:
        return ["Not measured (every repetition failed)."]
    bounded = all(r.bounded for r in ok)
    clean = all(not any(_other_5xx(k) or k == "client timeout" for k in r.statuses) for r in ok)
    retry = all(r.retry_after_503 == r.statuses.get("503 overloaded", 0) for r in ok)
    durable = all(r.lost == 0 and r.violations == 0 for r in ok)

    def word(b: bool) -> str:
        return "met" if b else "MISSED"

    return [
        f"- What was accepted stayed durable and finished (SIGKILL, recovery, audit): "
        f"**{word(durable)}**.",
        f"- Gateway memory bounded under overload (2nd half peak within 5% / 8 MiB of the "
        f"1st half's): **{word(bounded)}**.",
        f"- The rest refused cleanly: 503 `overloaded` with Retry-After on every refusal "
        f"(**{word(retry)}**), no other 5xx and no client timeouts (**{word(clean)}**).",
    ]


def render(settings: OverloadSettings, runs: Sequence[Run], info: dict[str, str]) -> str:
    s = settings
    parts = [
        "## Overload benchmark",
        "",
        f"`{s.command}`: the sustainable rate measured first ({s.sustain_concurrency} "
        f"closed-loop clients for {s.sustain_s:g} s, every saga to its end), then "
        f"{s.factor:g}x that rate offered open loop for {s.overload_s:g} s (client timeout "
        f"{s.client_timeout_s:g} s) to the gateway with SAGA_MAX_QUEUE={s.max_queue}; then "
        "the gateway is SIGKILLed and one `saga recovery` finishes its work before the audit.",
        "",
        table(runs),
        "",
        *verdict(runs),
    ]
    for r in runs:
        if r.error:
            parts += ["", f"rep {r.rep} failed: `{r.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class OverloadReport:
    settings: OverloadSettings
    runs: tuple[Run, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def run(settings: OverloadSettings, progress: Callable[[str], None]) -> OverloadReport:
    runs: list[Run] = []
    for rep in range(1, settings.reps + 1):
        got = _measure(rep, settings)
        runs.append(got)
        what = (
            f"failed: {got.error}"
            if got.error
            else f"sustainable {fmt_num(got.sustainable_per_s)}/s, offered "
            f"{fmt_num(got.offered_per_s)}/s: {got.statuses}"
        )
        progress(f"rep {rep}/{settings.reps}: {what}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir)
    markdown = render(settings, runs, info)
    out = settings.out
    files = write_outputs(
        out,
        "overload",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[asdict(r) for r in runs],
        data_dir=data_dir,
    )
    return OverloadReport(settings, tuple(runs), markdown, tuple(files))
