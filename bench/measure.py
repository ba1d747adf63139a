"""What the stack benchmarks (e2e, recovery, overload) share: reading the orders back
after a run, waiting for the sagas to settle, CPU shares of the stack's processes, and
small statistics over samples.

The time an order reached its terminal status is read afterwards, never polled during
the load: it is the saga's `updated_ms` (its last write is its terminal status), read
from `GET /orders` pages once every saga has settled. Both clocks are the machine's wall
clock, so `updated_ms - sent` is the order's time to terminal.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bench.report import fmt_num
from saga.children import CLOCK_TICKS, Child

__all__ = [
    "SERVICES",
    "SETTLE_S",
    "CpuMeter",
    "CpuTimes",
    "OrderEnd",
    "fetch_orders",
    "fmt_cpu",
    "process_cpu_seconds",
    "tree_cpu_seconds",
    "tree_cpu_times",
    "wait_settled",
]

PAGE: Final = 100
SERVICES: Final = ("order", "payment", "inventory")
SETTLE_S: Final = 120.0  # how long sagas may take to finish after the load


@dataclass(frozen=True, slots=True)
class OrderEnd:
    status: str  # PENDING, CONFIRMED, CANCELLED
    created_ms: int
    updated_ms: int  # for a CONFIRMED or CANCELLED order: when it became so


def _get_json(url: str, timeout_s: float = 30.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        doc = json.loads(resp.read())
    assert isinstance(doc, dict), doc
    return doc


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp() * 1000)


def wait_settled(base_url: str, timeout_s: float) -> bool:
    """Wait until no order is PENDING (every saga terminal or parked), up to timeout_s;
    one cheap query every quarter second, after the load, so it measures nothing."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = _get_json(f"{base_url}/orders?status=PENDING&limit=1")
        if not page["orders"]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def fetch_orders(base_url: str) -> dict[str, OrderEnd]:
    """Every order the gateway knows, by id (pages of GET /orders)."""
    out: dict[str, OrderEnd] = {}
    cursor: str | None = None
    while True:
        query = {"limit": str(PAGE)} | ({"cursor": cursor} if cursor else {})
        page = _get_json(f"{base_url}/orders?{urllib.parse.urlencode(query)}")
        orders = page["orders"]
        assert isinstance(orders, list)
        for o in orders:
            out[o["id"]] = OrderEnd(o["status"], _ms(o["created_at"]), _ms(o["updated_at"]))
        nxt = page.get("next_cursor")
        if not nxt:
            return out
        cursor = str(nxt)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds in user mode and in the kernel (utime and stime of /proc/PID/stat): a
    server whose time goes to the kernel spends it on sockets and wake-ups, not Python."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


_GONE: Final = CpuTimes(float("nan"), float("nan"))


def _stat(pid: int) -> tuple[int, CpuTimes] | None:
    """(parent pid, CPU times) of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), CpuTimes(int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds `pid` alone has used so far; nan once it is gone."""
    got = _stat(pid)
    return float("nan") if got is None else got[1].total


def tree_cpu_times(pid: int) -> CpuTimes:
    """CPU times used so far by `pid` and every live process under it: a gateway that
    runs worker processes is charged for its workers. nan once `pid` is gone."""
    parents: dict[int, int] = {}
    cpu: dict[int, CpuTimes] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = got
    if pid not in cpu:
        return _GONE
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    user, system, todo = 0.0, 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in cpu:
            user, system = user + cpu[p].user, system + cpu[p].system
        todo.extend(children.get(p, ()))
    return CpuTimes(user, system)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and the processes under it (tree_cpu_times)."""
    return tree_cpu_times(pid).total


class CpuMeter:
    """CPU each process (with the processes under it) used between `start` and `stop`:
    `seconds`, and `cores`, CPU seconds per second of wall time (1.0 is one core busy
    for the whole interval)."""

    def __init__(self, procs: Mapping[str, Child]) -> None:
        self._procs = dict(procs)
        self._t0 = 0.0
        self._c0: dict[str, float] = {}
        self.cores: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._c0 = {name: tree_cpu_seconds(p.pid) for name, p in self._procs.items()}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        self.seconds = {
            name: tree_cpu_seconds(p.pid) - self._c0[name] for name, p in self._procs.items()
        }
        self.cores = {name: s / wall for name, s in self.seconds.items()}
        return self.cores


def fmt_cpu(cores: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {fmt_num(100 * c)}%" for name, c in cores.items())
