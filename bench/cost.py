"""The CPU each process spends per order (issue 15: on a shared machine, CPU per order
moves far less than wall-clock rates do, so it is the figure to compare).

Two measurements, each on fresh processes in a fresh data folder, repeated:
- the stack: the three services, `saga gateway` (its worker processes counted with it),
  the recovery daemon and a private Redis, under bench/loadgen.py's closed loop at
  `concurrency` for `duration_s`; each process's CPU seconds from the load's start until
  every saga is terminal, ÷ the orders created: bench/cpu.py, the measurement `bench e2e`
  makes too (its CPU table has the same figure beside the rates, on PostgreSQL too);
- a service alone: `calls` Payment.Charge calls at `concurrency` from a grpc.aio client
  in this process, the service's CPU ÷ calls: a participant's cost per call, which the
  stack's figure mixes with the gateway's pace.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grpc import aio

from bench.cpu import StackCpu, per_order_ms
from bench.loadgen import LoadChild, LoadSpec
from bench.measure import SETTLE_S, fetch_orders, tree_cpu_seconds, wait_settled
from bench.report import fmt_num, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from proto.payment.v1 import payment_pb2, payment_pb2_grpc

__all__ = ["CostReport", "CostSettings", "charges", "run"]

ROLES = ("gateway", "order", "payment", "inventory", "recovery", "redis")


@dataclass(frozen=True, slots=True)
class CostSettings:
    reps: int = 3
    concurrency: int = 64
    duration_s: float = 6.0
    calls: int = 3000
    workers: int = 1  # SAGA_GATEWAY_WORKERS
    out: Path = Path("bench/out")
    data_dir: Path | None = None
    command: str = "python -m bench cost"

    @classmethod
    def quick(cls) -> CostSettings:
        return cls(reps=1, concurrency=4, duration_s=1.0, calls=100)


@dataclass(frozen=True, slots=True)
class CostReport:
    markdown: str
    files: tuple[Path, ...]


@dataclass
class _Rep:
    orders: int = 0
    ms_per_order: dict[str, float] = field(default_factory=dict)
    us_per_call: float | None = None


def _stack(settings: CostSettings, root: Path, rep: _Rep) -> None:
    with BenchStack(root, redis=True) as stack:
        stack.start_services()
        stack.start_gateway(SAGA_GATEWAY_WORKERS=str(settings.workers))
        stack.start_recovery()
        spec = LoadSpec(port=stack.port, duration_s=settings.duration_s,
                        concurrency=settings.concurrency)  # fmt: skip
        child = LoadChild(spec, root).start()
        meter = StackCpu(stack.processes())  # the same measurement as bench e2e's
        meter.start()
        child.result(timeout_s=settings.duration_s + 60)
        if not wait_settled(stack.url, SETTLE_S):
            raise RuntimeError(f"sagas still not terminal {SETTLE_S:g}s after the load")
        seconds = meter.stop()
        rep.orders = len(fetch_orders(stack.url))
        if rep.orders == 0:
            raise RuntimeError("no order was accepted")
        rep.ms_per_order = per_order_ms(seconds, rep.orders)


async def charges(addr: str, calls: int, concurrency: int) -> None:
    """`calls` Payment.Charge calls to `addr` from `concurrency` coroutines on one channel,
    each for a new order (bench floor drives its servers with it too)."""
    async with aio.insecure_channel(addr) as channel:
        stub = payment_pb2_grpc.PaymentStub(channel)
        todo = iter(range(calls))

        async def caller() -> None:
            for _ in todo:
                req = payment_pb2.ChargeRequest(
                    order_id=f"o-{uuid.uuid4().hex}", amount_cents=5000, customer_id="c1"
                )
                await stub.Charge(req, metadata=(("x-saga-epoch", "1"),), timeout=10)

        await asyncio.gather(*(caller() for _ in range(concurrency)))


def _service(settings: CostSettings, root: Path, rep: _Rep) -> None:
    with BenchStack(root, redis=False) as stack:
        stack.start_services()
        payment, addr = stack.services["payment"], stack.env["PAYMENT_SERVICE_ADDR"]
        asyncio.run(charges(addr, min(300, settings.calls), settings.concurrency))  # warm
        before = tree_cpu_seconds(payment.pid)
        asyncio.run(charges(addr, settings.calls, settings.concurrency))
        rep.us_per_call = 1e6 * (tree_cpu_seconds(payment.pid) - before) / settings.calls


def run(settings: CostSettings, progress: Callable[[str], None]) -> CostReport:
    reps: list[_Rep] = []
    for i in range(settings.reps):
        rep = _Rep()
        for part in (_stack, _service):
            with tempfile.TemporaryDirectory(prefix="saga-cost-", dir=settings.data_dir) as tmp:
                part(settings, Path(tmp), rep)
        reps.append(rep)
        cells = ", ".join(f"{k} {v:.2f}" for k, v in rep.ms_per_order.items())
        progress(f"rep {i + 1}/{settings.reps}: {rep.orders} orders; CPU ms/order: {cells}; "
                 f"payment alone {fmt_num(rep.us_per_call)} us/call")  # fmt: skip
        time.sleep(0.5)
    rows = [
        [role, " / ".join(f"{r.ms_per_order.get(role, float('nan')):.2f}" for r in reps),
         f"{median(r.ms_per_order.get(role, 0.0) for r in reps) or 0.0:.2f}"]
        for role in ROLES
    ]  # fmt: skip
    totals = [sum(r.ms_per_order.values()) for r in reps]
    rows.append(["**whole stack**", " / ".join(f"{t:.2f}" for t in totals),
                 f"**{median(totals) or 0.0:.2f}**"])  # fmt: skip
    alone = [r.us_per_call for r in reps if r.us_per_call is not None]
    markdown = "\n".join([
        "## CPU per order",
        "",
        f"`{settings.command}`: closed loop at {settings.concurrency} connections for "
        f"{settings.duration_s:g} s, `SAGA_GATEWAY_WORKERS={settings.workers}`; CPU from the "
        "first POST until every saga is terminal, ÷ orders created (bench/cpu.py, as in "
        "`bench e2e`).",
        "",
        markdown_table(("process", "CPU ms per order (each rep)", "median"), rows),
        "",
        f"Payment service alone, {settings.calls} Charge calls at {settings.concurrency}: "
        f"{' / '.join(fmt_num(a) for a in alone)} µs of CPU per call "
        f"(median {fmt_num(median(alone))}).",
        "",
    ])  # fmt: skip
    files = write_outputs(
        settings.out, "cost", markdown,
        settings={k: str(v) for k, v in asdict(settings).items()},
        machine=machine(settings.data_dir or Path(tempfile.gettempdir())),
        runs=[asdict(r) for r in reps],
        data_dir=settings.data_dir or Path(tempfile.gettempdir()),
    )  # fmt: skip
    return CostReport(markdown, tuple(files))
