"""The peers benchmark: the same order saga, over the same three services, driven by the
same load generator at the same concurrency, on this project's stack and on DBOS
Transact (bench/peer_dbos.py), interleaved repetitions, every process fresh each time.

What each is given (the report repeats it):
- saga: `saga gateway` (uvicorn, its defaults), `saga recovery` beside it, the saga log
  in SQLite (WAL, synchronous=FULL), as `saga up` runs them, plus a private Redis as the
  idempotency cache unless `redis` is off (`saga up` starts none);
- DBOS 3.4.0: one process, FastAPI on uvicorn, `start_workflow_async` in the route, the
  idempotency key as the workflow ID, the saga's steps as DBOS steps (6 attempts, 50 ms
  doubling), its system database in SQLite put in WAL mode, synchronous=FULL (SQLite's
  default, which DBOS keeps).
Both answer 201 once the order is durable and run its saga in the background.

One measurement: the load (wrk, or bench/loadgen.py without it) for the duration, then
every saga to its end. Accepted orders/s and the 201's latency come from the load
generator; end-to-end orders/s is the orders each recorded ÷ (its last terminal write -
the first POST), read from each one's own database afterwards; CPU seconds per 1,000
orders of the orchestrator's processes and of the services, from the first POST until
every saga was terminal.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

from bench import dbos_baseline
from bench.errors import BenchError
from bench.loadgen import LoadChild, LoadSpec
from bench.measure import SERVICES, SETTLE_S, CpuMeter
from bench.orchestrators import Orchestrator, find_restate, start_dbos, start_restate, start_saga
from bench.peers_kill import KillRun, kill_table, measure_kill
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
from bench.wrk import WrkSpec, find_wrk, run_wrk

__all__ = ["HEADER", "Peer", "PeerRun", "PeersReport", "PeersSettings", "run"]


class Peer(StrEnum):
    SAGA = "saga (this project)"
    DBOS = "DBOS"
    RESTATE = "Restate"


GIVEN: Final[dict[Peer, str]] = {
    Peer.SAGA: "`saga gateway` + `saga recovery` + a private Redis (idempotency cache); "
    "saga log in SQLite, WAL, synchronous=FULL",
    Peer.DBOS: "one process: FastAPI on uvicorn, `start_workflow_async` in the route, the "
    "idempotency key as the workflow ID, each saga step a DBOS step (6 attempts, 50 ms "
    "doubling); system database in SQLite, WAL, synchronous=FULL",
    Peer.RESTATE: "a single-node `restate-server` with its defaults (its log and state in "
    "RocksDB with the WAL fsynced, 24 partitions) but its ports and folder; the service "
    "endpoint one process (the SDK's request/response protocol over HTTP/1.1 on uvicorn), "
    "each saga step a `ctx.run` (6 attempts, 50 ms doubling); orders sent one way through "
    "the ingress (`/OrderSaga/order/send` with an `idempotency-key`), answered 202 once "
    "durable",
}
# What Peer.SAGA is given with `redis` off (--no-redis): the stack as `saga up` runs it.
SAGA_WITHOUT_REDIS: Final = (
    "`saga gateway` + `saga recovery`, no Redis (as `saga up` runs them: the log's own key "
    "is the idempotency check); saga log in SQLite, WAL, synchronous=FULL"
)


@dataclass(frozen=True, slots=True)
class PeersSettings:
    concurrency: int = 64
    duration_s: float = 10.0
    reps: int = 3
    peers: tuple[Peer, ...] = (Peer.SAGA, Peer.DBOS, Peer.RESTATE)
    restate_server: str | None = None  # the binary (run finds it: --restate-server or PATH)
    restate_given: str | None = None  # --restate-server
    install_wrk: bool = True
    redis: bool = True  # this project's gateway with a private Redis (--no-redis: none)
    kill: bool = True  # the kill -9 half too (bench/peers_kill.py)
    kill_concurrency: int = 16  # its load's threads, each retrying its key until acked
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench peers"

    @classmethod
    def quick(cls) -> PeersSettings:
        return cls(concurrency=4, duration_s=1.0, reps=1, kill_concurrency=4)


@dataclass(frozen=True, slots=True)
class _Load:
    started_wall_s: float
    seconds: float
    statuses: dict[str, int]
    p50_s: float | None
    p99_s: float | None


@dataclass(frozen=True, slots=True)
class PeerRun:
    peer: Peer
    rep: int
    seconds: float = 0.0
    accepted: int = 0
    orders: int = 0  # recorded in the peer's own database
    ended: dict[str, int] = field(default_factory=dict)  # by terminal status
    e2e_per_s: float | None = None
    p50_201_s: float | None = None
    p99_201_s: float | None = None
    not_201: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def per_k(self, names: Sequence[str]) -> float | None:
        if self.error or not self.orders:
            return None
        return 1000 * sum(self.cpu_s.get(n, 0.0) for n in names) / self.orders

    @property
    def orchestrator(self) -> tuple[str, ...]:
        return tuple(n for n in self.cpu_s if n not in SERVICES)


def _load(
    peer: Orchestrator, settings: PeersSettings, rep: int, wrk: str | None, root: Path
) -> _Load:
    port = peer.port
    if wrk is not None:
        spec = WrkSpec(
            port,
            settings.duration_s,
            settings.concurrency,
            key_prefix=f"p{rep}",
            path=peer.path,
            key_header=peer.key_header,
        )
        r = run_wrk(spec, wrk, root)
        statuses = {str(k): v for k, v in r.statuses.items()} | r.errors
        return _Load(r.started_wall_s, r.seconds, statuses, r.p50_s, r.p99_s)
    load_spec = LoadSpec(
        port=port,
        duration_s=settings.duration_s,
        concurrency=settings.concurrency,
        key_prefix=f"p{rep}",
    )
    res = LoadChild(load_spec, root).start().result(settings.duration_s + 60)
    ok = [s.latency_s for s in res.samples if s.status == 201]
    statuses = dict(Counter(str(s.status) for s in res.samples))
    return _Load(res.started_wall_s, res.seconds, statuses, percentile(ok, 50), percentile(ok, 99))


def _start(peer: Peer, stack: BenchStack, settings: PeersSettings) -> Orchestrator:
    stack.start_services()
    if peer is Peer.SAGA:
        return start_saga(stack)
    if peer is Peer.DBOS:
        return start_dbos(stack)
    if settings.restate_server is None:
        raise BenchError("no restate-server")
    return start_restate(stack, settings.restate_server)


def _redis(peer: Peer, settings: PeersSettings) -> bool:
    return peer is Peer.SAGA and settings.redis


def _given(peer: Peer, settings: PeersSettings) -> str:
    return GIVEN[peer] if peer is not Peer.SAGA or settings.redis else SAGA_WITHOUT_REDIS


def _measure_kill(peer: Peer, rep: int, settings: PeersSettings) -> KillRun:
    """The kill -9 half (bench/peers_kill.py) on fresh processes."""
    with tempfile.TemporaryDirectory(prefix="saga-peers-", dir=settings.data_dir) as tmp:
        try:
            with BenchStack(Path(tmp), redis=_redis(peer, settings)) as stack:
                peer_at = _start(peer, stack, settings)
                try:
                    return measure_kill(
                        peer_at, peer.value, rep, settings.duration_s, settings.kill_concurrency
                    )
                finally:
                    peer_at.close()
        except (BenchError, RuntimeError, OSError) as exc:
            return KillRun(peer.value, rep, error=str(exc)[:300])


def measure(peer: Peer, rep: int, settings: PeersSettings, root: Path, wrk: str | None) -> PeerRun:
    run = PeerRun(peer, rep)
    with BenchStack(root, redis=_redis(peer, settings)) as stack:
        peer_at = _start(peer, stack, settings)
        meter = CpuMeter(peer_at.procs)
        try:
            meter.start()
            load = _load(peer_at, settings, rep, wrk, root)
            accepted = load.statuses.get(str(peer_at.accepted_status), 0)
            settled = peer_at.settled(accepted, SETTLE_S)
            meter.stop()
            by, last_ms = peer_at.state()
        finally:
            peer_at.close()
    orders = sum(by.values())
    span_s = (last_ms - 1000 * load.started_wall_s) / 1000 if last_ms else 0.0
    statuses = Counter(load.statuses)
    run = replace(
        run,
        seconds=load.seconds,
        accepted=statuses.pop(str(peer_at.accepted_status), 0),
        orders=orders,
        ended=by,
        e2e_per_s=orders / span_s if span_s > 0 else None,
        p50_201_s=load.p50_s,
        p99_201_s=load.p99_s,
        not_201=dict(statuses),
        cpu_s=meter.seconds,
    )
    if not settled:
        return replace(run, error=f"sagas not terminal {SETTLE_S:g}s after the load")
    if run.accepted == 0:
        return replace(run, error="no order was accepted")
    return run


def _measure(peer: Peer, rep: int, settings: PeersSettings, wrk: str | None) -> PeerRun:
    with tempfile.TemporaryDirectory(prefix="saga-peers-", dir=settings.data_dir) as tmp:
        try:
            return measure(peer, rep, settings, Path(tmp), wrk)
        except (BenchError, RuntimeError, OSError) as exc:
            return PeerRun(peer, rep, error=str(exc)[:500])


# ---- the report -----------------------------------------------------------------------------

HEADER: Final = (
    "peer",
    "connections",
    "accepted orders/s",
    "ack p50 (ms)",
    "ack p99 (ms)",
    "end-to-end orders/s",
    "vs saga (end to end)",
    "orchestrator CPU s/1k",
    "services CPU s/1k",
    "stack CPU s/1k",
    "ended",
)


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def _vs_saga(runs: Sequence[PeerRun], of: PeerRun) -> float | None:
    for r in runs:
        if r.peer is Peer.SAGA and r.rep == of.rep and r.error is None:
            return None if of.e2e_per_s is None or not r.e2e_per_s else of.e2e_per_s / r.e2e_per_s
    return None


def table(settings: PeersSettings, runs: Sequence[PeerRun]) -> str:
    cells = []
    for peer in settings.peers:
        ok = [r for r in runs if r.peer is peer and r.error is None]
        ended = sum((Counter(r.ended) for r in ok), Counter())
        cells.append(
            [
                peer.value,
                str(settings.concurrency),
                fmt_num(_med([r.accepted / r.seconds for r in ok if r.seconds]))
                if ok
                else "failed",
                fmt_ms(_med([r.p50_201_s for r in ok])),
                fmt_ms(_med([r.p99_201_s for r in ok])),
                fmt_num(_med([r.e2e_per_s for r in ok])),
                fmt_ratio(_med([_vs_saga(runs, r) for r in ok])) if peer is not Peer.SAGA else "—",
                fmt_num(_med([r.per_k(r.orchestrator) for r in ok]), 2),
                fmt_num(_med([r.per_k(SERVICES) for r in ok]), 2),
                fmt_num(_med([r.per_k(tuple(r.cpu_s)) for r in ok]), 2),
                ", ".join(f"{n:,} {s}" for s, n in sorted(ended.items())) or "—",
            ]
        )
    return markdown_table(HEADER, cells)


def render(
    settings: PeersSettings,
    runs: Sequence[PeerRun],
    info: dict[str, str],
    kills: Sequence[KillRun] = (),
) -> str:
    s = settings
    parts = [
        "## Peers benchmark",
        "",
        f"`{s.command}`: the order saga over the same three `saga service` processes, "
        f"{s.concurrency} closed-loop connections for {s.duration_s:g} s, then every saga to "
        f"its end; peers interleaved, medians of {s.reps} repetition"
        f"{'s' if s.reps != 1 else ''}. End-to-end orders/s: orders recorded ÷ (last "
        "terminal write - first POST), from each peer's own database. CPU s/1k: CPU "
        "seconds per 1,000 orders from the first POST until every saga was terminal. "
        "ack: the answer that says the order is durable (the 201; Restate's 202), its "
        "latency wrk's, of every answer.",
        "",
        table(settings, runs),
        "",
        "What each peer was given:",
        "",
        *(f"- {p.value}: {_given(p, settings)}." for p in settings.peers),
    ]
    if kills:
        parts += [
            "",
            "### kill -9",
            "",
            f"Each orchestrator (the saga gateway; DBOS's app process; Restate's server) "
            f"SIGKILLed {s.duration_s / 2:g} s into a {s.duration_s:g} s load and started "
            f"again at once on the same port and data, on fresh processes per repetition. "
            f"The load (bench/retry_load.py, {s.kill_concurrency} threads) sends order "
            "after order, each with its own idempotency key, and sends a failed POST again "
            "with the same key every 50 ms until it is acknowledged; afterwards, with every "
            "saga ended, each acknowledged key is POSTed once more. Both bold columns must "
            "be 0: an acknowledged order the peer does not have or never finished, a key "
            "whose answers named two different orders.",
            "",
            kill_table(kills),
        ]
    for r in runs:
        if r.not_201:
            what = ", ".join(f"{n:,} {k}" for k, n in sorted(r.not_201.items()))
            parts += ["", f"Answers other than 201, {r.peer.value}, rep {r.rep}: {what}."]
        if r.error:
            parts += ["", f"{r.peer.value}, rep {r.rep} failed: `{r.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class PeersReport:
    settings: PeersSettings
    runs: tuple[PeerRun, ...]
    markdown: str
    files: tuple[Path, ...] = ()
    kills: tuple[KillRun, ...] = ()


def run(settings: PeersSettings, progress: Callable[[str], None]) -> PeersReport:
    peers = list(settings.peers)
    missing = dbos_baseline.available()
    if Peer.DBOS in peers and missing:
        progress(f"{missing}: DBOS is skipped")
        peers.remove(Peer.DBOS)
    found = find_wrk(install=settings.install_wrk)
    progress(found.how if found.path else f"{found.how}: bench/loadgen.py drives the load")
    restate, how = find_restate(settings.restate_given)
    if Peer.RESTATE in peers and (restate is None or found.path is None):
        why = how if restate is None else "its ingress takes its own path: wrk is needed"
        progress(f"{why}: Restate is skipped")
        peers.remove(Peer.RESTATE)
    elif Peer.RESTATE in peers:
        progress(how)
    settings = replace(settings, peers=tuple(peers), restate_server=restate)
    runs: list[PeerRun] = []
    kills: list[KillRun] = []
    for rep in range(1, settings.reps + 1):
        order = peers if rep % 2 else list(reversed(peers))  # interleaved, both ways round
        for peer in order:
            got = _measure(peer, rep, settings, found.path)
            runs.append(got)
            what = (
                f"failed: {got.error}"
                if got.error
                else f"{fmt_num(got.accepted / got.seconds if got.seconds else None)} "
                f"accepted/s, {fmt_num(got.e2e_per_s)} end to end/s, "
                f"{fmt_num(got.per_k(tuple(got.cpu_s)), 2)} CPU s/1k"
            )
            progress(f"rep {rep}/{settings.reps}  {peer.value}: {what}")
        for peer in order if settings.kill else ():
            killed = _measure_kill(peer, rep, settings)
            kills.append(killed)
            what = killed.error or (
                f"{killed.acked:,} acked, {killed.never_ended} never ended, "
                f"{killed.answered_twice} keys answered twice"
            )
            progress(f"rep {rep}/{settings.reps}  {peer.value} kill -9: {what}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    extra = {
        "DBOS": dbos_baseline.version() or "not installed",
        "Restate": _restate_versions(restate) if Peer.RESTATE in peers else "not measured",
        "load generator": found.how if found.path else "bench/loadgen.py",
    }
    info = machine(data_dir, extra)
    markdown = render(settings, runs, info, kills)
    files = write_outputs(
        settings.out,
        "peers",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[asdict(r) for r in runs] + [{"kill": asdict(k)} for k in kills],
        data_dir=data_dir,
    )
    return PeersReport(settings, tuple(runs), markdown, tuple(files), tuple(kills))


def _restate_versions(binary: str | None) -> str:
    import importlib.metadata
    import subprocess

    server = "unknown"
    if binary:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        server = done.stdout.strip() or server
    try:
        sdk = importlib.metadata.version("restate-sdk")
    except importlib.metadata.PackageNotFoundError:
        sdk = "not installed"
    return f"{server}, restate-sdk {sdk}"
