"""`Children`: a labelled Prometheus metric's children, each looked up once."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

__all__ = ["Children"]

_M = TypeVar("_M", Counter, Histogram)


class Children(Generic[_M]):
    """A labelled metric's children, each looked up once: prometheus-client's `labels()`
    validates and locks on every call, several times the cost of the `inc()` or
    `observe()` it precedes, and the hot paths (every request, every step) call it with
    the same few label values again and again. Label values are templates, names and
    outcomes (a bounded set, never ids), so the memo is bounded too."""

    def __init__(self, metric: _M) -> None:
        self.metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child
