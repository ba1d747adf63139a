"""The ceiling: what an order's unavoidable work costs without the engine, measured in
the same run as the end-to-end benchmark, so that its table can say how close the stack
comes to it (`vs ceiling`).

An order's unavoidable work is its participant calls and its durable writes. Here they
are made with nothing else around them: no HTTP, no saga logic, no runner.
- The calls are the order saga's own step actions (orders/saga.py), called in order with
  a plain StepContext, through the gateway's gRPC client (orders.participants) to the
  three real `saga service` processes: exactly the requests the saga makes on its happy
  path (4 calls today: create the order, reserve, charge, confirm).
- The writes go through the engine's group-commit `Writer` (engine/sqlite.py: one thread,
  `BEGIN IMMEDIATE … COMMIT`, synchronous=FULL, WAL) into a minimal two-table schema
  shaped like the saga log's (a saga row, its transitions), as many writes per saga as
  the engine makes: measured first, in the same measurement, by driving a few order
  sagas one at a time through the real `Runner` on a `SqliteSagaLog` and counting its
  commits (nothing shared at concurrency 1, so commits = writes). Each write is awaited
  before the saga goes on, interleaved with the calls as the engine does (create, an
  intent before each call, the last outcome with the terminal status), so concurrent
  sagas share commits exactly as they do in the engine.

N sagas are kept in flight (closed loop) for warm-up + duration; sagas/s counts those
finished in the window after the warm-up, and CPU seconds per 1,000 sagas are taken over
the same window for this driver process and each service.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Final

import apsw

from bench.errors import BenchError
from bench.measure import CpuMeter
from bench.report import fmt_num, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from bench.watched_log import WatchedLog
from engine.core import SagaStatus
from engine.definition import Done, SagaDefinition, StepContext
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga
from engine.sqlite import BatchStats, DbConfig, Synchronous, Writer
from engine.sqlite_log import SqliteSagaLog
from orders.model import ORDER_SAGA, Item, OrderRequest
from orders.participants import Participants, ServiceAddresses
from orders.saga import order_saga

__all__ = [
    "HEADER",
    "CeilingReport",
    "CeilingRun",
    "CeilingSettings",
    "measure",
    "run",
    "table",
]

PAYLOAD: Final = OrderRequest("cust_bench", (Item("prod_1", 1, 5000),)).to_payload()
CALIBRATION_SAGAS: Final = 8
DRIVER: Final = "driver"  # this process: the calls' client and the writer thread
SCHEMA: Final = """
CREATE TABLE sagas (
    id TEXT PRIMARY KEY, payload BLOB NOT NULL, status TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE transitions (
    saga_id TEXT NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL,
    at_ms INTEGER NOT NULL, PRIMARY KEY (saga_id, seq)
);
"""


@dataclass(frozen=True, slots=True)
class CeilingSettings:
    concurrencies: tuple[int, ...] = (16, 64, 256)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    reps: int = 3
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench ceiling"

    @classmethod
    def quick(cls) -> CeilingSettings:
        return cls(concurrencies=(4,), duration_s=1.0, warmup_s=0.2, reps=1)


@dataclass(frozen=True, slots=True)
class CeilingRun:
    concurrency: int
    rep: int
    window_s: float
    sagas: int = 0  # finished in the window
    calls_per_saga: int = 0
    writes_per_saga: int = 0
    engine_commits_per_saga: float | None = None  # the calibration: the engine alone
    commits: int = 0  # group commits in the window
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds in the window
    error: str | None = None

    @property
    def rate(self) -> float | None:
        return None if self.error or not self.sagas else self.sagas / self.window_s

    def cpu_per_k(self, name: str) -> float | None:
        if self.error or not self.sagas or name not in self.cpu_s:
            return None
        return 1000 * self.cpu_s[name] / self.sagas

    @property
    def stack_cpu_per_k(self) -> float | None:
        if self.error or not self.sagas:
            return None
        return 1000 * sum(self.cpu_s.values()) / self.sagas


# ---- the engine's commits per saga, measured -----------------------------------------------


async def engine_commits_per_saga(participants: Participants, root: Path) -> float:
    """Commits per order saga of the real engine, nothing shared: a few sagas one at a
    time through a `Runner` on a fresh `SqliteSagaLog` (FULL)."""
    batches: list[BatchStats] = []
    cfg = DbConfig(root / "calibration.db", synchronous=Synchronous.FULL)
    watched = WatchedLog(SqliteSagaLog.open(cfg, on_batch=batches.append))
    settings = RunnerSettings(owner="ceiling-calibration", capacity=4, claim=False)
    runner = Runner(watched, [order_saga(participants)], settings)
    await runner.start()
    try:
        before = len(batches)
        for i in range(CALIBRATION_SAGAS):
            saga_id = f"calibration-{i}"
            await runner.start_saga(NewSaga(saga_id, ORDER_SAGA, PAYLOAD))
            async with asyncio.timeout(30):
                status = await watched.finished(saga_id)
            if status is not SagaStatus.COMPLETED:
                raise BenchError(f"calibration saga {saga_id} ended {status}, not COMPLETED")
        commits = len(batches) - before
    finally:
        await runner.stop()
        await watched.close()
    return commits / CALIBRATION_SAGAS


# ---- the ceiling's saga ---------------------------------------------------------------------


def _create(saga_id: str, now_ms: int) -> Callable[[apsw.Connection], None]:
    def unit(conn: apsw.Connection) -> None:
        conn.execute(
            "INSERT INTO sagas (id, payload, status, updated_ms) VALUES (?, ?, 'RUNNING', ?)",
            (saga_id, PAYLOAD, now_ms),
        )
        conn.execute("INSERT INTO transitions VALUES (?, 1, 'CREATED', ?)", (saga_id, now_ms))

    return unit


def _append(saga_id: str, seq: int, status: str, now_ms: int) -> Callable[[apsw.Connection], None]:
    def unit(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO transitions VALUES (?, ?, 'STEP', ?)", (saga_id, seq, now_ms))
        conn.execute(
            "UPDATE sagas SET status = ?, updated_ms = ? WHERE id = ?", (status, now_ms, saga_id)
        )

    return unit


class _Saga:
    """One order's calls and writes, in the engine's order (see the module)."""

    def __init__(self, writer: Writer, definition: SagaDefinition, writes: int) -> None:
        self.writer = writer
        self.steps = definition.steps
        self.writes = max(1, writes)
        # Writes besides the create and the final one, each just before a call (the last
        # calls get them when there are fewer writes than calls).
        self.intents = min(len(self.steps), max(0, self.writes - 2))

    async def run(self, saga_id: str) -> None:
        seq = 1
        await self.writer.run(_create(saga_id, int(time.time() * 1000)))
        first_intent = len(self.steps) - self.intents
        for k, step in enumerate(self.steps):
            if k >= first_intent:
                seq += 1
                await self.writer.run(_append(saga_id, seq, "RUNNING", int(time.time() * 1000)))
            ctx = StepContext(saga_id, PAYLOAD, epoch=1, attempt=1, step=step.name)
            result = await step.action(ctx)
            if not isinstance(result, Done):
                raise BenchError(f"{saga_id}: {step.name} answered {result}, not Done")
        for _ in range(self.writes - 1 - self.intents):
            seq += 1
            await self.writer.run(_append(saga_id, seq, "COMPLETED", int(time.time() * 1000)))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(
    stack: BenchStack, concurrency: int, rep: int, settings: CeilingSettings, root: Path
) -> CeilingRun:
    run = CeilingRun(concurrency, rep, settings.duration_s)
    participants = Participants(ServiceAddresses.from_env(stack.env))
    try:
        engine_commits = await engine_commits_per_saga(participants, root)
        writes = max(1, round(engine_commits))
        batches: list[float] = []  # when each commit ended (the writer thread appends)
        writer = Writer(
            DbConfig(root / "ceiling.db", synchronous=Synchronous.FULL),
            [SCHEMA],
            name="ceiling-writer",
            on_batch=lambda _: batches.append(time.perf_counter()),
        )
        definition = order_saga(participants)
        saga = _Saga(writer, definition, writes)
        ends: list[float] = []
        meter = CpuMeter(stack.services)
        started = time.perf_counter()
        lo, hi = started + settings.warmup_s, started + settings.warmup_s + settings.duration_s
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() < hi:
                await saga.run(f"ceiling-{rep}-{concurrency}-{next(counter)}")
                ends.append(time.perf_counter())

        async def window() -> float:
            await asyncio.sleep(max(0.0, lo - time.perf_counter()))
            meter.start()
            cpu0 = _own_cpu()
            await asyncio.sleep(max(0.0, hi - time.perf_counter()))
            meter.stop()
            return _own_cpu() - cpu0

        try:
            measuring = asyncio.create_task(window())
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            own = await measuring
        finally:
            writer.close()
    finally:
        await participants.close()
    return replace(
        run,
        sagas=sum(1 for t in ends if lo <= t < hi),
        calls_per_saga=len(definition.steps),
        writes_per_saga=writes,
        engine_commits_per_saga=engine_commits,
        commits=sum(1 for t in batches if lo <= t < hi),
        cpu_s={DRIVER: own, **meter.seconds},
    )


def measure(concurrency: int, rep: int, settings: CeilingSettings, root: Path) -> CeilingRun:
    """One measurement on fresh services and a fresh database in `root`."""
    with BenchStack(root, redis=False) as stack:
        stack.start_services()
        return asyncio.run(_drive(stack, concurrency, rep, settings, root))


def measure_fresh(concurrency: int, rep: int, settings: CeilingSettings) -> CeilingRun:
    """`measure` in a fresh temporary folder; a failure is a run with its error."""
    with tempfile.TemporaryDirectory(prefix="saga-ceiling-", dir=settings.data_dir) as tmp:
        try:
            return measure(concurrency, rep, settings, Path(tmp))
        except (BenchError, RuntimeError, OSError) as exc:
            return CeilingRun(concurrency, rep, settings.duration_s, error=str(exc)[:500])


# ---- the report -----------------------------------------------------------------------------

PROCESSES: Final = (DRIVER, "order", "payment", "inventory")
HEADER: Final = (
    "concurrency",
    "sagas",
    "sagas/s",
    "gRPC calls/saga",
    "writes/saga",
    "commits/saga",
    *(f"{p} CPU s/1k" for p in PROCESSES),
    "all CPU s/1k",
)


def _med(values: Sequence[float | None]) -> float | None:
    return median(v for v in values if v is not None)


def table(runs: Sequence[CeilingRun]) -> str:
    cells = []
    for c in sorted({r.concurrency for r in runs}):
        ok = [r for r in runs if r.concurrency == c and r.error is None]
        cells.append(
            [
                str(c),
                fmt_num(_med([float(r.sagas) for r in ok])),
                fmt_num(_med([r.rate for r in ok])) if ok else "failed",
                fmt_num(_med([float(r.calls_per_saga) for r in ok])),
                fmt_num(_med([float(r.writes_per_saga) for r in ok])),
                fmt_num(_med([r.commits / r.sagas for r in ok if r.sagas]), 2),
                *(fmt_num(_med([r.cpu_per_k(p) for r in ok]), 2) for p in PROCESSES),
                fmt_num(_med([r.stack_cpu_per_k for r in ok]), 2),
            ]
        )
    return markdown_table(HEADER, cells)


def describe(runs: Sequence[CeilingRun]) -> str:
    engine = _med([r.engine_commits_per_saga for r in runs if r.error is None])
    return (
        "The ceiling: each saga makes the order saga's gRPC calls (its step actions, in "
        "order, through the gateway's client) to the three real services and as many "
        "group-committed writes (synchronous=FULL, WAL, the engine's `Writer`) as the "
        f"engine commits per order saga when nothing is shared (measured: "
        f"{fmt_num(engine, 2)}); no HTTP, no saga logic. CPU s/1k: CPU seconds per "
        "1,000 sagas of the driver (this benchmark's process: gRPC client, writer thread) "
        "and of each service."
    )


def render(settings: CeilingSettings, runs: Sequence[CeilingRun], info: dict[str, str]) -> str:
    s = settings
    parts = [
        "## Ceiling benchmark",
        "",
        f"`{s.command}`: N sagas in flight (closed loop), {s.duration_s:g} s measured after "
        f"{s.warmup_s:g} s of warm-up; medians of {s.reps} repetition"
        f"{'s' if s.reps != 1 else ''}. {describe(runs)}",
        "",
        table(runs),
    ]
    for r in runs:
        if r.error:
            parts += ["", f"concurrency {r.concurrency}, rep {r.rep} failed: `{r.error}`"]
    parts += ["", "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class CeilingReport:
    settings: CeilingSettings
    runs: tuple[CeilingRun, ...]
    markdown: str
    files: tuple[Path, ...] = ()


def run(settings: CeilingSettings, progress: Callable[[str], None]) -> CeilingReport:
    runs: list[CeilingRun] = []
    for rep in range(1, settings.reps + 1):
        for c in settings.concurrencies:
            got = measure_fresh(c, rep, settings)
            runs.append(got)
            progress(f"rep {rep}/{settings.reps}  c={c:<4} ceiling: {summary(got)}")
    data_dir = settings.data_dir or Path(tempfile.gettempdir())
    info = machine(data_dir)
    markdown = render(settings, runs, info)
    files = write_outputs(
        settings.out,
        "ceiling",
        markdown,
        settings=asdict(settings),
        machine=info,
        runs=[asdict(r) for r in runs],
        data_dir=data_dir,
    )
    return CeilingReport(settings, tuple(runs), markdown, tuple(files))


def summary(got: CeilingRun) -> str:
    """One progress line's worth."""
    if got.error:
        return f"failed: {got.error}"
    return (
        f"{fmt_num(got.rate)} sagas/s, {got.writes_per_saga} writes and "
        f"{got.calls_per_saga} calls per saga, {fmt_num(got.stack_cpu_per_k, 2)} CPU s/1k"
    )
