"""Observability at the services' boundary: a server interceptor that counts every RPC
and times it by method and status code (Prometheus), and OpenTelemetry's own gRPC server
interceptor that continues the caller's trace from its `traceparent` metadata.

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
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from engine.config import Address, format_addr
from engine.errors import ListenError
from engine.logging_setup import SAGA_ID

__all__ = ["MetricsEndpoint", "RpcMetrics", "interceptors"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


if TYPE_CHECKING:  # grpc's stubs make it generic; at run time it is a plain class
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class RpcMetrics(_Interceptor):
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self._service = service
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
        method = handler_call_details.method.rsplit("/", 1)[-1]
        behavior = handler.unary_unary

        # grpc hands the handler untyped request and context objects (its stubs model the
        # synchronous server's context here).
        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            saga_id = _saga_id(request)
            token = SAGA_ID.set(saga_id)
            if saga_id is not None:
                trace.get_current_span().set_attribute("saga.id", saga_id)
            try:
                response = await behavior(request, context)
                code = _code_name(context) or "OK"
                return response
            except BaseException:
                code = _code_name(context) or "UNKNOWN"
                raise
            finally:
                SAGA_ID.reset(token)
                self.calls.labels(self._service, method, code).inc()
                self.seconds.labels(self._service, method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
