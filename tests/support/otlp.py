"""A tiny OTLP/gRPC trace receiver for tests: real processes export their spans to it
(`OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint`) as they would to a collector, and the
test reads them back as plain `Span` values.

    with OtlpReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
        env["OTEL_BSP_SCHEDULE_DELAY"] = "50"   # export within 50 ms, not 5 s
        ...
        spans = otlp.wait_for(lambda s: len(s.named("saga.step confirm_order")) == 1)

It implements opentelemetry-proto's collector TraceService/Export on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from types import TracebackType
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.support.spans import Span, Spans

__all__ = ["OtlpReceiver"]


def _value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, object]:
    pairs: list[KeyValue] = list(kvs)
    return {kv.key: _value(kv.value) for kv in pairs}


def _kind(kind: int) -> str:
    return ProtoSpan.SpanKind.Name(kind).removeprefix("SPAN_KIND_")  # type: ignore[arg-type]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[list[Span]], None]) -> None:
        self._sink = sink

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans = []
        for rs in request.resource_spans:
            service = str(_attributes(rs.resource.attributes).get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            kind=_kind(s.kind),
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex() or None,
                            attributes=_attributes(s.attributes),
                        )
                    )
        self._sink(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self._add), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (http:// = no TLS)."""
        return f"http://127.0.0.1:{self.port}"

    def _add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> Spans:
        with self._lock:
            return Spans(list(self._spans))

    def wait_for(self, ready: Callable[[Spans], bool], within_s: float = 20.0) -> Spans:
        """Poll (bounded) until `ready(spans)`: exporters send in their own time."""
        deadline = time.monotonic() + within_s
        while True:
            spans = self.spans()
            if ready(spans):
                return spans
            assert time.monotonic() < deadline, "spans never arrived:\n" + spans.describe()
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)
