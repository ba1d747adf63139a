"""Observability at the services' boundary: a server interceptor that counts every RPC
and times it by method and status code (Prometheus), and a server span that continues the
caller's trace from its `traceparent` metadata.

The span: when spans are exported, OpenTelemetry's own gRPC server interceptor makes it,
with its attributes and status. When nothing is exported (the tracer samples nothing),
that interceptor costs ~0.15 ms of CPU per call for a span nobody keeps, about a third of
a service's whole call; the metrics interceptor then opens the non-recording span itself
(engine.tracing.LightSpan) in the caller's trace, which is all the logs need (the
caller's `trace_id`, a `span_id` of the call). docs/benchmarks.md has the measurement.

The order an RPC is about (its `order_id`, or `id` for the Order service) is the saga's
id: it is stamped on the server span (`saga.id`) and on every log line written while the
RPC runs (`saga_id`), so one id finds a saga's steps in every process.

Labels are the service, the method and the status code, never an order id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from engine.config import Address, format_addr
from engine.errors import ListenError
from engine.labels import Children
from engine.logging_setup import SAGA_ID
from engine.telemetry import exports
from engine.tracing import LightSpan, trace_id_of

__all__ = ["MetricsEndpoint", "RpcMetrics", "interceptors"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


if TYPE_CHECKING:  # grpc's stubs make them generic; at run time they are plain classes
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler


_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class RpcMetrics(_Interceptor):
    """Counts and times every RPC; `light`, also opens its server span (see the module's
    docstring: only when no span is exported)."""

    def __init__(self, service: str, registry: CollectorRegistry, *, light: bool = False) -> None:
        self._service = service
        self._light = light
        # The wrapped handler of each method, made on its first call: grpc hands back the
        # same registered handler every time, so wrapping it once per call is waste.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        self.calls = Counter(
            "saga_service_rpc",
            "RPCs answered, by method and status code",
            ["service", "method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "saga_service_rpc_duration_seconds",
            "RPC handling time, by method",
            ["service", "method"],
            buckets=_BUCKETS,
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(full, handler)
        self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _wrap(self, full: str, handler: Handler) -> Handler:
        method = full.rsplit("/", 1)[-1]
        behavior = handler.unary_unary
        assert behavior is not None
        calls = Children(self.calls)
        timer = self.seconds.labels(self._service, method)  # resolved once, not per call
        service = self._service
        light = self._light and not full.startswith(_HEALTH_PREFIX)

        # grpc hands the handler untyped request and context objects (its stubs model the
        # synchronous server's context here).
        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            saga_id = _saga_id(request)
            token = SAGA_ID.set(saga_id)
            try:
                if light:
                    with LightSpan(trace_id_of(propagate.extract(_carrier(context)))):
                        response = await behavior(request, context)
                else:
                    if saga_id is not None:
                        trace.get_current_span().set_attribute("saga.id", saga_id)
                    response = await behavior(request, context)
                code = _code_name(context) or "OK"
                return response
            except BaseException:
                code = _code_name(context) or "UNKNOWN"
                raise
            finally:
                SAGA_ID.reset(token)
                calls(service, method, code).inc()
                timer.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _carrier(context: Any) -> dict[str, str]:
    """The call's text metadata (`traceparent`, `tracestate`, …) for the propagator."""
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _saga_id(request: Any) -> str | None:
    """The order (= saga) a request names, if any: `order_id`, or the Order service's `id`."""
    for field in ("order_id", "id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return None


def _code_name(context: Any) -> str | None:
    code = context.code()
    if code is None:
        return None
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:  # some grpc versions keep the raw integer
        if status.value[0] == code:
            return status.name
    return str(code)


def interceptors(
    service: str, registry: CollectorRegistry, tracer_provider: TracerProvider | None = None
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """Tracing first, so the metrics interceptor's work happens inside the server span.
    Health checks (a probe every few seconds) make no spans; they are still counted.
    `tracer_provider`: the process's global one when None."""
    provider = tracer_provider or trace.get_tracer_provider()
    if not exports(provider):  # the light span (see the module's docstring)
        return [RpcMetrics(service, registry, light=True)]
    tracing: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider,
        filter_=filters.negate(filters.health_check()),
    )
    return [tracing, RpcMetrics(service, registry)]


class MetricsEndpoint:
    """prometheus-client's HTTP server for one registry, on its own thread."""

    def __init__(self, server: Any, thread: Any, host: str) -> None:
        self._server = server
        self._thread = thread
        self.address = format_addr((host, int(server.server_port)))

    @classmethod
    def start(cls, addr: Address, registry: CollectorRegistry, name: str) -> MetricsEndpoint:
        host, port = addr
        try:
            server, thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise ListenError(
                f"cannot serve the {name} service's metrics on {format_addr(addr)}: "
                f"{exc.strerror or exc}"
            ) from exc
        return cls(server, thread, host)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
