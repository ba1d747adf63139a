"""OpenTelemetry set-up, once per process at its entry point.

A tracer provider is always installed, so every request and saga step has a trace id to
log and to store in the saga log (W3C `traceparent` is propagated over HTTP and gRPC).
Spans leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over gRPC).
Without it nothing is sampled: spans are non-recording, so they still mint and carry trace
and span ids (for the logs, the saga log and `traceparent`) but keep no attributes and
are never queued, which costs a few microseconds per span.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

__all__ = ["exports", "service_name", "setup_tracing", "tracer_provider"]

log = logging.getLogger(__name__)


def service_name(role: str) -> str:
    """The `service.name` of a process's spans: saga-gateway, saga-order, …"""
    return f"saga-{role}"


def tracer_provider(
    service: str, env: Mapping[str, str], *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider for `service` that exports to `exporter`, else over OTLP when
    OTEL_EXPORTER_OTLP_ENDPOINT is set, else samples nothing (ids only)."""
    endpoint = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if exporter is None and endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        log.info("exporting spans to %s", endpoint)
    resource = Resource.create({"service.name": service_name(service)})
    if exporter is None:
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    # The SDK's default sampler (parent-based, always on; OTEL_TRACES_SAMPLER may say
    # otherwise) and batch processor (OTEL_BSP_* tune it).
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exports(provider: trace.TracerProvider | None = None) -> bool:
    """Whether spans of `provider` (the process's global one when None) can leave the
    process. False for the provider `tracer_provider` builds without an exporter: then
    the boundaries open their non-recording spans themselves rather than through
    OpenTelemetry's instrumentations, whose per-request work (attributes, filters,
    handler wrapping) is for spans nobody keeps (docs/benchmarks.md)."""
    provider = provider or trace.get_tracer_provider()
    return not (isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF)


def setup_tracing(
    service: str, env: Mapping[str, str], *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the process's tracer provider; call `shutdown()` on it when stopping so
    that queued spans are flushed. `exporter` overrides the OTLP one (tests)."""
    provider = tracer_provider(service, env, exporter=exporter)
    trace.set_tracer_provider(provider)
    return provider
