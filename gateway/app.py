"""The gateway's FastAPI app: `create_app(settings, ...)`.

One lifespan function owns start-up and shutdown (STYLE 10). Start-up opens the saga log
(unless given), the participants' channels, the idempotency cache (Redis when REDIS_URL is
set) and the runner, whose pump drains sagas queued in the log. Shutdown stops the runner
(in-flight calls get SAGA_DRAIN_S, then every saga still owned is handed back to the log,
claimable at once), then closes what start-up opened, in reverse order. What a caller
passed in is the caller's to close.

Everything a route needs is one `Gateway` (gateway/context.py) on `app.state`, set by the
lifespan: no module-level state, so two apps live side by side in one test process.

Traces hang on the boundary (STYLE 9): OpenTelemetry's FastAPI instrumentation makes a
server span per request, continuing the caller's `traceparent`; a new order's saga is
filed under that span's trace id, each step attempt is a span of that trace (TracingHooks)
and each call to a participant a client span under it, whose `traceparent` the service
continues. Probes (/healthz, /readyz, /metrics) make no spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider
from starlette.types import ASGIApp

from engine.clock import Clock
from engine.crashpoints import CrashPoints
from engine.errors import StorageError
from engine.idempotency import IdempotencyCache, NullCache
from engine.redis_cache import RedisCache
from engine.saga_log import SagaLog
from engine.telemetry import exports
from gateway import routes_ops, routes_orders, routes_sagas
from gateway.context import Gateway
from gateway.errors import install_error_handlers
from gateway.fast_orders import OrdersFastPath
from gateway.metrics import GatewayMetrics
from gateway.middleware import BodyLimit, HeaderGuard, RequestMetrics, RequestSpan
from gateway.schemas import ErrorOut, OrderIn
from gateway.settings import GatewaySettings
from gateway.ui import SecurityHeaders, install_ui
from orders.participants import Participants
from orders.runtime import order_runtime
from orders.saga import OrderSagaPolicy

__all__ = ["create_app"]

DESCRIPTION = """\
The order API of a durable saga engine. An order is acknowledged (201) only once it and
its saga are durable in the SQLite saga log; the saga (create order, reserve stock,
charge payment, confirm) then runs in the background and survives crashes. Errors are
always `{"error": "<code>", "message": "<sentence>"}`.
"""


def create_app(
    settings: GatewaySettings,
    *,
    log: SagaLog | None = None,
    participants: Participants | None = None,
    cache: IdempotencyCache | None = None,
    metrics: GatewayMetrics | None = None,
    clock: Clock | None = None,
    crash: CrashPoints | None = None,
    policy: OrderSagaPolicy | None = None,
    owner: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The HTTP API. Resources not given are opened by the lifespan from `settings`;
    `policy` tunes the order saga's retries, `owner` names the runner (tests);
    `tracer_provider` is where spans go (the process's global one when None)."""
    metrics = metrics or GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open the cache, then the runtime in a task of its own (`_run`): a database that
        cannot be reached yet does not hold start-up; the app serves 503 `unavailable`
        (and /readyz names the database) until the log opens. Anything else that fails
        on the way (a wrong password, a bad log file) fails start-up as before."""
        async with contextlib.AsyncExitStack() as stack:
            idem = cache
            if idem is None:
                idem = (
                    RedisCache(
                        settings.redis_url,
                        timeout_s=settings.redis_timeout_s,
                        on_error=metrics.cache_error,
                    )
                    if settings.redis_url
                    else NullCache()
                )
                stack.push_async_callback(idem.close)
            settled = asyncio.Event()  # the log is open, or is being waited for
            stop = asyncio.Event()

            def on_waiting(err: StorageError) -> None:
                app.state.starting = err.message
                settled.set()

            async def run() -> None:
                async with order_runtime(
                    settings.drive,
                    role="gateway",
                    capacity=settings.runner_capacity,
                    max_queue=settings.max_queue,
                    metrics=metrics.saga,
                    log=log,
                    participants=participants,
                    policy=policy,
                    owner=owner,
                    clock=clock,
                    crash=crash,
                    tracer_provider=tracer_provider,
                    on_waiting=on_waiting,
                ) as runtime:
                    app.state.gateway = Gateway(
                        settings=settings,
                        log=runtime.log,
                        runner=runtime.runner,
                        cache=idem,
                        participants=runtime.participants,
                        metrics=metrics,
                        definitions={runtime.definition.name: runtime.definition},
                        clock=clock or runtime.log.clock,
                    )
                    app.state.starting = None
                    settled.set()
                    try:
                        await stop.wait()
                    finally:
                        del app.state.gateway

            app.state.starting = None
            app.state.metrics = metrics  # /metrics answers while the log is waited for
            boot = asyncio.create_task(run(), name="gateway-runtime")
            app.state.boot = boot  # gateway/main.py ends the process if it fails later
            settling = asyncio.create_task(settled.wait())
            try:
                await asyncio.wait({boot, settling}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                settling.cancel()
            if boot.done():
                boot.result()  # start-up failed: raise why
            try:
                yield
            finally:
                stop.set()
                if not hasattr(app.state, "gateway"):
                    boot.cancel()  # still waiting for the database: nothing to drain
                with contextlib.suppress(asyncio.CancelledError):
                    await boot

    app = FastAPI(
        title="Durable saga order API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs is the explorer's (gateway/ui): Swagger UI served from the gateway itself.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own telemetry would be a second server span and five operation spans
        # per request (non-recording ones too, when nothing is exported): the request's
        # span is the instrumentation's or RequestSpan's below, its metrics are ours.
        telemetry=_NO_NATIVE_TELEMETRY,
    )
    install_error_handlers(app)
    app.include_router(routes_orders.router)
    app.include_router(routes_sagas.router)
    app.include_router(routes_ops.router)
    install_ui(app)
    app.add_api_route(
        "/", lambda: RedirectResponse("/ui", status_code=307), include_in_schema=False
    )
    # Added innermost first: the metrics see the 413s of the body limit, and the orders'
    # fast path is inside both.
    app.add_middleware(OrdersFastPath, route=_placing_route())
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    provider = tracer_provider or trace.get_tracer_provider()
    if exports(provider):
        # Outermost (it wraps the whole middleware stack): every answer, errors included,
        # is inside the request's span. The ASGI receive/send spans would only add noise.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=tracer_provider,
            excluded_urls=_UNTRACED,
            exclude_spans=["receive", "send"],
        )
        inner = app.build_middleware_stack
    else:  # nothing leaves the process: the same span, non-recording, at ~no cost
        untraced = re.compile("|".join(_UNTRACED.split(",")))
        stack = app.build_middleware_stack

        def inner() -> ASGIApp:
            return RequestSpan(stack(), untraced=untraced)

    # Around the instrumentation itself, as the instrumentation wraps the stack (see
    # HeaderGuard): a header it cannot decode must be a 400, never its exception.
    app.build_middleware_stack = lambda: HeaderGuard(inner())  # type: ignore[method-assign]
    return app


_NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

# Probes are scraped every few seconds and belong to no order's story; nor do the
# explorer's pages, which refresh themselves every few seconds.
_UNTRACED = r"/healthz,/readyz,/metrics,/ui\b,/docs\b"


def _placing_route() -> APIRoute:
    """The router's own route object, as the app leaves in the scope of its requests."""
    return next(
        r
        for r in routes_orders.router.routes
        if isinstance(r, APIRoute) and r.endpoint is routes_orders.create_order
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus what it cannot see: the POST /orders body (read by hand for
    exact money, see gateway/order_input.py) and the errors any route may answer."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    order_in = OrderIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(order_in.pop("$defs", {}))
    schemas["OrderIn"] = order_in
    schemas.setdefault(
        "ErrorOut", ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            # FastAPI documents its own 422 for malformed parameters; we answer 400.
            auto = responses.get("422", {}).get("content", {}).get("application/json", {})
            if auto.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            queried = any(p.get("in") == "query" for p in operation.get("parameters", ()))
            if queried:
                responses.setdefault(
                    "400", {"description": "invalid_request: a malformed parameter",
                            "content": error}
                )  # fmt: skip
            responses.setdefault(
                "413", {"description": "payload_too_large: the body is over the limit",
                        "content": error}
            )  # fmt: skip
            responses.setdefault(
                "500", {"description": "internal: a bug; it has been logged", "content": error}
            )
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc
