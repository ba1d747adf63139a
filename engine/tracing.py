"""Spans for the runner: one per step attempt and per compensation, with the saga id,
step, attempt, epoch and outcome as attributes (an adapter of `engine.hooks.Hooks`,
wrapping another one, usually the metrics).

A saga keeps one trace for its whole life. The trace id is stored in the saga log when
the saga is created (from the request that created it) and with every transition. A
runner that resumes the saga later, in another process after a crash, parents its spans
on that stored trace id, so one trace id finds the whole story, recovery included.

When no span leaves the process (`light`, engine.telemetry.exports), an attempt's span is
made here, non-recording, with the ids the SDK would have given it (the saga's trace, a
fresh span id): the SDK's road (sampler, attribute dict, its context manager) cost ~10%
of the gateway's CPU for spans nobody keeps (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import Token

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from engine.core import SagaStatus
from engine.hooks import Hooks
from engine.saga_log import SagaRecord

__all__ = ["LightSpan", "TracingHooks", "current_trace_id", "trace_id_of"]

_IDS = RandomIdGenerator()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def _stored_trace_id(record: SagaRecord) -> int | None:
    """The trace id stored with the saga; None when none was stored or it is unreadable."""
    if record.trace_id is None:
        return None
    try:
        return int(record.trace_id, 16)
    except ValueError:
        return None


def _saga_parent(record: SagaRecord) -> otel_context.Context | None:
    """The context to parent this saga's spans on: the live one when it is already the
    saga's trace (the creating request, in the gateway), else a remote parent with the
    stored trace id (any later owner)."""
    trace_id = _stored_trace_id(record)
    if trace_id is None or trace_id == trace_id_of(None):
        return None
    # A stable span id per saga: every resumption hangs off the same (virtual) parent.
    span_id = int.from_bytes(hashlib.sha256(record.id.encode()).digest()[:8], "big") or 1
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


class LightSpan:
    """A non-recording span, current while the `with` block runs: the ids the SDK's
    non-recording span would have (trace `trace_id`, a new trace when None; a fresh
    span id), without the SDK's sampler, attributes and generator context manager. What
    every boundary opens when no span leaves the process (engine.telemetry.exports)."""

    __slots__ = ("_context", "_token")

    def __init__(self, trace_id: int | None) -> None:
        self._context = SpanContext(
            trace_id or _IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False
        )
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> SpanContext:
        span = NonRecordingSpan(self._context)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return self._context

    def __exit__(self, *_exc: object) -> None:
        assert self._token is not None, "exited a LightSpan never entered"
        otel_context.detach(self._token)


def trace_id_of(context: otel_context.Context | None) -> int | None:
    """The trace `context`'s span belongs to (the current one when None); None when it
    has no valid span."""
    found = trace.get_current_span(context).get_span_context()
    return found.trace_id if found.is_valid else None


def _saga_trace_id(record: SagaRecord) -> int | None:
    """The trace an attempt's span belongs to, as the SDK would choose: the saga's
    stored one, else the live one (the creating request's), else (None) a new one."""
    stored = _stored_trace_id(record)
    if stored is not None:
        return stored or None  # all zeros is no trace: a new one
    return trace_id_of(None)


class TracingHooks:
    """`light`: no span leaves the process, so attempts get their non-recording spans
    from `attempt` itself (see the module)."""

    def __init__(
        self, inner: Hooks, tracer: trace.Tracer | None = None, *, light: bool = False
    ) -> None:
        self._inner = inner
        self._tracer = tracer or trace.get_tracer("saga.engine")
        self._light = light

    def saga_started(self, definition: str) -> None:
        self._inner.saga_started(definition)

    def saga_finished(self, definition: str, status: SagaStatus) -> None:
        self._inner.saga_finished(definition, status)

    @contextlib.contextmanager
    def attempt(
        self, record: SagaRecord, step: str, compensation: bool, attempt: int
    ) -> Iterator[str | None]:
        if self._light:
            with (
                LightSpan(_saga_trace_id(record)) as light,
                self._inner.attempt(record, step, compensation, attempt),
            ):
                yield f"{light.trace_id:032x}"
            return
        kind = "compensate" if compensation else "step"
        with (
            self._tracer.start_as_current_span(
                f"saga.{kind} {step}",
                context=_saga_parent(record),
                attributes={
                    "saga.id": record.id,
                    "saga.definition": record.definition,
                    "saga.step": step,
                    "saga.compensation": compensation,
                    "saga.attempt": attempt,
                    "saga.epoch": record.epoch,
                },
            ) as span,
            self._inner.attempt(record, step, compensation, attempt),
        ):
            ctx = span.get_span_context()
            yield f"{ctx.trace_id:032x}" if ctx.is_valid else record.trace_id

    def attempt_finished(
        self, definition: str, step: str, compensation: bool, outcome: str, seconds: float
    ) -> None:
        span = trace.get_current_span()
        span.set_attribute("saga.outcome", outcome)
        if outcome in ("error", "timeout", "fenced"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        self._inner.attempt_finished(definition, step, compensation, outcome, seconds)

    def claimed(self, count: int) -> None:
        self._inner.claimed(count)

    def inflight(self, count: int) -> None:
        self._inner.inflight(count)
