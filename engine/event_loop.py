"""The event loop of every long-running process (gateway, services, recovery daemon).

uvloop rather than the standard library's loop: the same asyncio API (grpc.aio, uvicorn,
redis and the saga log's writer hand-off run on it unchanged), with its scheduling,
sockets and timers in C, which is CPU that every request, gRPC call and commit wake-up
spends. docs/benchmarks.md has the measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
