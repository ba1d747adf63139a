"""The one table from the services' errors to gRPC status codes, and the decorator that
applies it to every servicer method.

A handled error answers its status code with the error's message as the details and its
stable `code` in the `x-saga-error` trailing metadata. Storage trouble is UNAVAILABLE (the
caller retries), never INTERNAL with a traceback; only a real bug is INTERNAL, and it is
logged here with its traceback. A write whose COMMIT outcome is unknown is UNKNOWN with
`outcome_unknown`, never a refusal: the caller sends the same call again, and the journal
answers a repeat once (a serving process ends first: see services/common/server.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from engine.errors import CommitOutcomeUnknown, EngineError, StorageError, unreachable
from services.common.errors import (
    ConflictingRepeat,
    EpochFenced,
    InjectedFault,
    InvalidArgument,
    NotFound,
)

__all__ = ["ERROR_KEY", "STATUS_BY_ERROR", "rpc", "status_for"]

log = logging.getLogger(__name__)

ERROR_KEY: Final = "x-saga-error"

STATUS_BY_ERROR: Final[tuple[tuple[type[EngineError], grpc.StatusCode], ...]] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (EpochFenced, grpc.StatusCode.ABORTED),
    (ConflictingRepeat, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InjectedFault, grpc.StatusCode.UNAVAILABLE),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    (CommitOutcomeUnknown, grpc.StatusCode.UNKNOWN),
)


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return code
    return None


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Coroutine[Any, Any, Resp]]


def rpc(method: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
    """Wrap a servicer method: errors of the table become their status code."""

    @functools.wraps(method)
    async def handler(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise  # the method answered a status itself
        except Exception as exc:
            code = status_for(exc)
            if code is None or not isinstance(exc, EngineError):
                # A bug, not a caller's mistake: the traceback goes to the log, not the wire.
                log.exception("%s failed", method.__name__)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"{method.__name__}: internal error (see the service's log)",
                    ((ERROR_KEY, "internal"),),
                )
            message = exc.message
            if isinstance(exc, StorageError):
                message = f"the ledger is unavailable, retry later: {exc.message}"
            elif isinstance(exc, CommitOutcomeUnknown):
                message = f"whether this call was recorded is unknown, send it again: {exc.message}"
                log.error("%s: %s", method.__name__, message)
            if code is grpc.StatusCode.UNAVAILABLE:
                # An unreachable database is one outage, logged once by the ledger
                # (engine/pg/outage.py), not once per call that met it.
                level = logging.DEBUG if unreachable(exc) else logging.WARNING
                log.log(level, "%s: %s", method.__name__, message)
            await context.abort(code, message, ((ERROR_KEY, exc.code),))

    return handler
