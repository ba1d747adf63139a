"""The event loop of every long-running process (gateway, services, recovery daemon).

uvloop rather than the standard library's loop: the same asyncio API (grpc.aio, uvicorn,
redis and the saga log's writer hand-off run on it unchanged), with its scheduling,
sockets and timers in C, which is CPU that every request, gRPC call and commit wake-up
spends. docs/benchmarks.md has the measurement.

The cyclic garbage collector is tuned for a server before the loop starts. Every request,
call and saga step allocates hundreds of short-lived objects, and with CPython's default
thresholds a young collection ran every 700 of them and walked the survivors each time:
the collector was the gateway's largest single cost after the interpreter itself. Now
the objects alive at start-up (modules, classes, protobuf descriptors) are frozen out of
every collection, and a young collection waits for `_YOUNG_THRESHOLD` allocations. Garbage
without cycles is still freed at once by reference counting; cycles wait a little longer,
a few megabytes at most.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import uvloop

__all__ = ["run"]

T = TypeVar("T")

_YOUNG_THRESHOLD: Final = 50_000  # allocations between young collections (CPython: 700)
_OLDER_THRESHOLDS: Final = (20, 100)  # young and middle collections before the next older


def _tune_gc() -> None:
    """Freeze what is alive now out of the collector's walks and space collections out
    (see the module)."""
    gc.freeze()  # start-up leaves next to no garbage: a collection first frees ~nothing
    gc.set_threshold(_YOUNG_THRESHOLD, *_OLDER_THRESHOLDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a fresh uvloop event loop, with the collector tuned."""
    _tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
