"""Step attempts' spans when nothing is exported (TracingHooks(light=True)): the same
trace ids the SDK's non-recording spans get, a fresh span id per attempt in the context
while the step runs (what `traceparent` carries), and the caller's context back after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext

from engine.core import SagaStatus
from engine.hooks import NullHooks
from engine.saga_log import SagaRecord
from engine.tracing import TracingHooks

STORED = "4bf92f3577b34da6a3ce929d0e0e4736"
LIVE = 0x0AF7651916CD43DD8448EB211C80319C


def _record(trace_id: str | None) -> SagaRecord:
    return SagaRecord(
        id="o-1",
        definition="order",
        status=SagaStatus.RUNNING,
        payload=b"{}",
        idempotency_key=None,
        payload_digest="",
        owner="gw",
        lease_expires_ms=0,
        epoch=2,
        trace_id=trace_id,
        reason=None,
        created_ms=0,
        updated_ms=0,
    )


@contextlib.contextmanager
def _live_span() -> Iterator[None]:
    span = NonRecordingSpan(SpanContext(LIVE, 0x00F067AA0BA902B7, is_remote=False))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def _attempt(hooks: TracingHooks, record: SagaRecord) -> tuple[str | None, SpanContext]:
    with hooks.attempt(record, "charge_payment", False, 1) as trace_id:
        inside = trace.get_current_span().get_span_context()
    return trace_id, inside


@pytest.fixture
def both() -> tuple[TracingHooks, TracingHooks]:
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    return TracingHooks(NullHooks(), tracer), TracingHooks(NullHooks(), tracer, light=True)


@pytest.mark.parametrize(
    ("stored", "live", "expected"),
    [
        (STORED, False, STORED),  # a resumed saga, no request around it: its stored trace
        (STORED, True, STORED),  # its stored trace wins over a live one
        (f"{LIVE:032x}", True, f"{LIVE:032x}"),  # the creating request's own trace
        (None, True, f"{LIVE:032x}"),  # nothing stored: the live trace
        ("not hex", True, f"{LIVE:032x}"),
    ],
)
def test_light_spans_carry_the_trace_the_sdk_would(
    both: tuple[TracingHooks, TracingHooks], stored: str | None, live: bool, expected: str
) -> None:
    sdk, light = both
    record = _record(stored)
    with _live_span() if live else contextlib.nullcontext():
        before = trace.get_current_span()
        for hooks in (sdk, light):
            trace_id, inside = _attempt(hooks, record)
            assert trace_id == expected
            assert f"{inside.trace_id:032x}" == expected
            assert inside.is_valid and not inside.trace_flags.sampled
            assert trace.get_current_span() is before  # the caller's context is back


def test_each_light_attempt_has_its_own_span_and_no_trace_means_a_new_one(
    both: tuple[TracingHooks, TracingHooks],
) -> None:
    _, light = both
    first_id, first = _attempt(light, _record(STORED))
    _, second = _attempt(light, _record(STORED))
    assert first.span_id != second.span_id
    assert first_id == STORED
    fresh_id, fresh = _attempt(light, _record(None))  # no stored trace, nothing live
    _, other = _attempt(light, _record(None))
    assert fresh.is_valid and fresh_id == f"{fresh.trace_id:032x}"
    assert fresh.trace_id != other.trace_id
    zeros_id, zeros = _attempt(light, _record("0" * 32))  # no trace either, as for the SDK
    assert zeros.is_valid and zeros_id == f"{zeros.trace_id:032x}" != "0" * 32
