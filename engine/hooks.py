"""Observability hangs on the runner's boundary: the runner calls these hooks, adapters
turn them into metrics and spans (the gateway and the daemon install theirs). Labels are
definition names, step names and outcomes, never ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from engine.core import SagaStatus
from engine.saga_log import SagaRecord

__all__ = ["Hooks", "NullHooks"]


class Hooks(Protocol):
    def saga_started(self, definition: str) -> None: ...

    def saga_finished(self, definition: str, status: SagaStatus) -> None: ...

    def attempt(
        self, record: SagaRecord, step: str, compensation: bool, attempt: int
    ) -> AbstractContextManager[str | None]:
        """Wraps one call to a participant (a span); yields the trace id to log with it."""
        ...

    def attempt_finished(
        self, definition: str, step: str, compensation: bool, outcome: str, seconds: float
    ) -> None:
        """outcome: done, refused, error, timeout, fenced."""
        ...

    def claimed(self, count: int) -> None:
        """One scan for claimable sagas took `count` of them (0 included)."""
        ...

    def inflight(self, count: int) -> None: ...


class NullHooks:
    """No metrics, no spans, at no cost."""

    def saga_started(self, definition: str) -> None:
        return None

    def saga_finished(self, definition: str, status: SagaStatus) -> None:
        return None

    @contextlib.contextmanager
    def attempt(
        self, record: SagaRecord, step: str, compensation: bool, attempt: int
    ) -> Iterator[str | None]:
        yield record.trace_id

    def attempt_finished(
        self, definition: str, step: str, compensation: bool, outcome: str, seconds: float
    ) -> None:
        return None

    def claimed(self, count: int) -> None:
        return None

    def inflight(self, count: int) -> None:
        return None
