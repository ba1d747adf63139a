"""CPU per order per process: the one measurement `bench e2e`, `bench scale` and
`bench cost` share (issue 15: on a shared machine CPU per order moves far less than wall
time, so it is the figure to compare).

`StackCpu` is started just before the first POST and stopped once every saga has ended
(the gateway and the daemon keep driving sagas after the load): each process's CPU
seconds in between, with every process under it (a gateway's worker processes), and,
when the stack runs on PostgreSQL, the database server's backends serving the stack's
database as `postgres` (bench/pg.py: ServerCpu). Divided by the orders, that is CPU per
order per process; the load generator is not in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bench.measure import CpuMeter
from bench.pg import ServerCpu
from saga.children import Child

__all__ = ["POSTGRES", "StackCpu", "per_order_ms"]

POSTGRES: Final = "postgres"  # the name the database server's share goes by


class StackCpu:
    """CPU seconds of each process of a stack (and its database's backends) between
    `start` and `stop`; `stop` returns them by process name."""

    def __init__(self, procs: Mapping[str, Child], database_url: str | None = None) -> None:
        self._meter = CpuMeter(procs)
        self._server = ServerCpu(database_url) if database_url else None
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._meter.start()
        if self._server:
            self._server.start()

    def stop(self) -> dict[str, float]:
        self._meter.stop()
        self.seconds = dict(self._meter.seconds)
        if self._server:  # the server works for this stack: charged like its processes
            self.seconds[POSTGRES] = self._server.stop()
        return self.seconds


def per_order_ms(seconds: Mapping[str, float], orders: int) -> dict[str, float]:
    """CPU milliseconds per order of each process; empty when there was no order."""
    return {name: 1000 * s / orders for name, s in seconds.items()} if orders else {}
