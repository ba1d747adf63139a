"""The CPU each process spends per order (issue 15: on a shared machine, CPU per order
moves far less than wall-clock rates do, so it is the figure to compare).

Two measurements, each on fresh processes in a fresh data folder, repeated:
- the stack: the three services, `saga gateway` (its worker processes counted with it),
  the recovery daemon and a private Redis, under bench/loadgen.py's closed loop at
  `concurrency` for `duration_s`; each process's CPU seconds from the load's start until
  every saga is terminal (the gateway and the daemon keep driving after the load), ÷ the
  orders accepted;
- a service alone: `calls` Payment.Charge calls at `concurrency` from a grpc.aio client
  in this process, the service's CPU ÷ calls: a participant's cost per call, which the
  stack's figure mixes with the gateway's pace.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grpc import aio

from bench.loadgen import LoadChild, LoadSpec
from bench.measure import wait_settled
from bench.report import fmt_num, machine, markdown_table, median, write_outputs
from bench.stack import BenchStack
from proto.payment.v1 import payment_pb2, payment_pb2_grpc
from saga.children import CLOCK_TICKS, Child

__all__ = ["CostReport", "CostSettings", "run"]

SETTLE_S = 120.0
ROLES = ("gateway", "order", "payment", "inventory", "recovery")


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


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live children (a gateway's workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += sum(int(x) for x in fields[11:15]) / CLOCK_TICKS  # u, s, cu, cs
    return total


def _stack(settings: CostSettings, root: Path, rep: _Rep) -> None:
    with BenchStack(root, redis=True) as stack:
        stack.start_services()
        stack.start_gateway(SAGA_GATEWAY_WORKERS=str(settings.workers))
        stack.start_recovery()
        procs: dict[str, Child] = {k: v for k, v in stack.processes().items() if k in ROLES}
        spec = LoadSpec(port=stack.port, duration_s=settings.duration_s,
                        concurrency=settings.concurrency)  # fmt: skip
        before = {name: _tree_cpu_s(p.pid) for name, p in procs.items()}
        load = LoadChild(spec, root).start().result(timeout_s=settings.duration_s + 60)
        if not wait_settled(stack.url, SETTLE_S):
            raise RuntimeError(f"sagas still not terminal {SETTLE_S:g}s after the load")
        rep.orders = sum(1 for s in load.samples if s.status == 201)
        if rep.orders == 0:
            raise RuntimeError("no order was accepted")
        rep.ms_per_order = {
            name: 1000 * (_tree_cpu_s(p.pid) - before[name]) / rep.orders
            for name, p in procs.items()
        }


async def _charges(addr: str, calls: int, concurrency: int) -> None:
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
        asyncio.run(_charges(addr, min(300, settings.calls), settings.concurrency))  # warm
        before = _tree_cpu_s(payment.pid)
        asyncio.run(_charges(addr, settings.calls, settings.concurrency))
        rep.us_per_call = 1e6 * (_tree_cpu_s(payment.pid) - before) / settings.calls


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
        "load's start until every saga is terminal, ÷ orders accepted.",
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
