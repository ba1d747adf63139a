"""The benchmarks' error root, under the engine's like every package's."""

from __future__ import annotations

from engine.errors import EngineError

__all__ = ["BenchError", "StackError"]


class BenchError(EngineError):
    """A benchmark cannot measure what it was asked to."""

    code = "bench_error"


class StackError(BenchError):
    """The real stack cannot be started as asked (e.g. no redis-server)."""

    code = "stack_error"
