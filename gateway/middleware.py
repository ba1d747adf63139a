"""Pure ASGI middleware of the gateway (no BaseHTTPMiddleware: it would run routes in
another task, and a client's disconnect must never cancel the work of a request).

- `BodyLimit`: 413 `payload_too_large` for a body over the limit, from its Content-Length
  before reading anything, and while streaming when it has none (chunked) or lies.
- `RequestMetrics`: counts every answer by method, route template and status.
- `HeaderGuard`: 400 `invalid_request` for a header the tracing middleware cannot
  decode, before it reads the headers.
- `RequestSpan`: the request's server span when no span is exported (see its docstring).
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Final

from opentelemetry import propagate
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.tracing import LightSpan, trace_id_of
from gateway.errors import ApiError, error_response
from gateway.metrics import GatewayMetrics

__all__ = ["BodyLimit", "HeaderGuard", "RequestMetrics", "RequestSpan"]

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                err = _too_large(self.max_bytes)
                await error_response(err.status, err.code, err.message)(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's read of the body: its handler answers 413.
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class RequestMetrics:
    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception escaped every handler
        started = time.perf_counter()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            # The router leaves the matched route in the scope; its template, never the
            # raw path (ids would make a series per order).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.request(method, route, status, time.perf_counter() - started)


class HeaderGuard:
    """Outermost, around the tracing middleware: OpenTelemetry's ASGI instrumentation reads
    every header to find `traceparent`, decoding each as UTF-8 and else as a Python escape
    sequence, and raises on bytes that are neither (b"\\x80\\\\": a byte that is not
    UTF-8, then a lone backslash): a 500 for a client's malformed header, found by the fuzz
    test. Such a request is refused with the envelope instead. Other bytes outside UTF-8
    pass as before (a Latin-1 bearer token is still a 403, not a 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if not (_readable(name) and _readable(value)):
                    shown = name.decode("latin-1")[:40]
                    message = f"header {shown!r} is not valid UTF-8"
                    await error_response(400, "invalid_request", message)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _readable(raw: bytes) -> bool:
    """Whether the tracing middleware can decode it: its own two tries, in its order."""
    if raw.isascii():  # every header of an ordinary request: no decoder needed
        return True
    for codec in ("utf-8", "unicode_escape"):
        try:
            with warnings.catch_warnings():  # "invalid escape sequence": readable all the same
                warnings.simplefilter("ignore", DeprecationWarning)
                raw.decode(codec)
        except UnicodeDecodeError:
            continue
        return True
    return False


_CONTEXT_HEADERS: Final = frozenset({b"traceparent", b"tracestate", b"baggage"})


class RequestSpan:
    """Outermost when no span is exported, in place of OpenTelemetry's ASGI
    instrumentation: each request's server span, non-recording, continuing the caller's
    `traceparent`, so that the saga's `trace_id` and the log lines are as before. The
    instrumentation's per-request work (its attributes, URL filters, header decoding) is
    for spans nobody keeps: ~8% of the gateway's CPU (docs/benchmarks.md). `untraced`:
    paths that get no span, as the instrumentation's `excluded_urls`."""

    def __init__(self, app: ASGIApp, *, untraced: re.Pattern[str]) -> None:
        self.app = app
        self.untraced = untraced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.untraced.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CONTEXT_HEADERS
        }
        with LightSpan(trace_id_of(propagate.extract(carrier)) if carrier else None):
            await self.app(scope, receive, send)
