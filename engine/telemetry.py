"""OpenTelemetry set-up, once per process at its entry point.

A tracer provider is always installed, so every request and saga step has a trace id to
log and to store in the saga log (W3C `traceparent` is propagated over HTTP and gRPC).
Spans leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over gRPC);
without it they are dropped as they end, which costs next to nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

__all__ = ["setup_tracing"]

log = logging.getLogger(__name__)


def setup_tracing(
    service: str, env: Mapping[str, str], *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the process's tracer provider; call `shutdown()` on it when stopping so
    that queued spans are flushed. `exporter` overrides the OTLP one (tests)."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"saga-{service}"}))
    endpoint = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if exporter is None and endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        log.info("exporting spans to %s", endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
