"""The HTTP edge's one error table, and the handlers that render every error in the
contract's envelope: `{"error": "<code>", "message": "<human sentence>"}`.

Engine errors carry a code and data; `ENGINE_ERRORS` decides their HTTP status and public
code, here and nowhere else. The gateway's own refusals (bad input, auth, overload) are
`ApiError`s that already know theirs. Whatever else escapes a route is a bug: a 500
`internal` with a sentence that promises nothing, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.core import CannotChange
from engine.errors import (
    CommitOutcomeUnknown,
    EngineError,
    StaleEpoch,
    StorageError,
    unreachable,
)
from engine.operations import UnknownDefinition
from engine.saga_log import IdempotencyKeyReused, InvalidCursor, SagaNotFound

__all__ = [
    "ENGINE_ERRORS",
    "ApiError",
    "GatewayError",
    "answer_error",
    "envelope",
    "error_response",
    "install_error_handlers",
    "public_code",
]

log = logging.getLogger(__name__)

# The one table: engine error -> (HTTP status, public code). Looked up along the MRO, so a
# subclass inherits its parent's row unless it has its own.
ENGINE_ERRORS: Final[Mapping[type[EngineError], tuple[int, str]]] = {
    # 503 promises that nothing was created; an unknown outcome must never say so. (A
    # serving gateway ends before it could answer at all: gateway/main.py.)
    StorageError: (503, "unavailable"),
    CommitOutcomeUnknown: (500, "outcome_unknown"),
    IdempotencyKeyReused: (422, "idempotency_key_reused"),
    InvalidCursor: (400, "invalid_cursor"),
    SagaNotFound: (404, "saga_not_found"),
    CannotChange: (409, "conflict"),
    UnknownDefinition: (409, "conflict"),
    StaleEpoch: (409, "conflict"),
}

# Statuses the framework itself raises (routing, methods) -> public code.
_HTTP_CODES: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class GatewayError(EngineError):
    """Root of the gateway's own errors."""

    code = "gateway_error"


class ApiError(GatewayError):
    """A refusal the gateway decides itself, with its status, code and headers."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def envelope(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(envelope(code, message), status_code=status, headers=dict(headers or {}))


def engine_status(exc: EngineError) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        row = ENGINE_ERRORS.get(cls)
        if row is not None:
            return row
    return None


def public_code(exc: EngineError) -> str:
    """The code a client sees for `exc` (for metrics labels)."""
    row = engine_status(exc)
    return "internal" if row is None else row[1]


def _engine_message(exc: EngineError, code: str) -> str:
    if isinstance(exc, StorageError):
        # The path and driver detail go to the log, not to clients.
        return (
            "the saga log cannot be written right now, so nothing was done; "
            "retry later with the same idempotency key"
        )
    if isinstance(exc, CommitOutcomeUnknown):
        return (
            "the saga log could not confirm this write, so it may or may not have been "
            "done; retry with the same idempotency key"
        )
    if isinstance(exc, CannotChange):
        return f"{exc.code}: {exc.message}"
    return exc.message


def _validation_message(errors: Sequence[Any]) -> str:
    parts: list[str] = []
    for err in errors[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = loc[0] + " parameter " + repr(".".join(loc[1:])) if len(loc) > 1 else "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is malformed"


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    row = engine_status(exc)
    if row is None:
        return await _on_unexpected(request, exc)
    status, code = row
    if status >= 500:
        # A database that cannot be reached is one outage, told once where it starts and
        # ends (engine/pg/outage.py), not once per request that met it.
        log.log(
            logging.DEBUG if unreachable(exc) else logging.WARNING,
            "%s %s: %s",
            request.method,
            request.url.path,
            exc.message,
        )
    headers = {"Retry-After": "1"} if status == 503 else None
    return error_response(status, code, _engine_message(exc, code), headers)


async def answer_error(request: Request, exc: EngineError) -> JSONResponse:
    """The handlers' answer to `exc`, for a path that runs in front of them
    (gateway/fast_orders.py)."""
    if isinstance(exc, ApiError):
        return await _on_api_error(request, exc)
    return await _on_engine_error(request, exc)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(
        exc.status_code, "invalid_request" if exc.status_code < 500 else "internal"
    )
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI says 422 for a malformed request; the contract says 400.
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "invalid_request", _validation_message(exc.errors()))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "an internal error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(EngineError, _on_engine_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
