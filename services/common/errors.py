"""The services' error root. Ledgers and validators raise these; they know nothing of gRPC.

Each error carries the data a caller needs (the order id, the field, the epochs) and a
stable `code`; `services/common/status.py` maps every class to one gRPC status code in one
table, and sends the `code` as trailing metadata so a client can branch on it without
parsing the message.
"""

from __future__ import annotations

from engine import errors as engine_errors
from engine.errors import EngineError

__all__ = [
    "ConflictingRepeat",
    "EpochFenced",
    "InjectedFault",
    "InvalidArgument",
    "LedgerOpenError",
    "NotFound",
    "ServiceError",
]


class ServiceError(EngineError):
    """Root of the participant services' own errors."""

    code = "service_error"


class InvalidArgument(ServiceError):
    """The request is malformed; sending it again cannot succeed."""

    code = "invalid_argument"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class EpochFenced(ServiceError, engine_errors.StaleEpoch):
    """A caller's epoch is lower than one already seen for the order: it lost ownership.
    (The engine's StaleEpoch, as a service sees it: with the order and the epochs.)"""

    code = "stale_epoch"

    def __init__(self, order_id: str, epoch: int, highest: int) -> None:
        super().__init__(
            f"order {order_id!r}: epoch {epoch} is stale, epoch {highest} has been seen; "
            "another owner has taken over this order"
        )
        self.order_id = order_id
        self.epoch = epoch
        self.highest = highest


class ConflictingRepeat(ServiceError):
    """The same (order, operation) again with a different payload: a caller bug.

    Nothing is applied: the first request's effect stands, and the new one is refused
    rather than silently answered with the old result.
    """

    code = "conflicting_repeat"

    def __init__(self, order_id: str, operation: str, detail: str) -> None:
        super().__init__(
            f"order {order_id!r}: {operation} was already called with {detail}; "
            "a repeat must carry the same request"
        )
        self.order_id = order_id
        self.operation = operation


class NotFound(ServiceError):
    code = "not_found"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class InjectedFault(ServiceError):
    """A fault injected for a test (SAGA_ENV=test only); the caller should retry."""

    code = "injected_fault"
    retryable = True

    def __init__(self, method: str, point: str) -> None:
        super().__init__(f"injected fault: {method} failed {point.replace('_', ' ')} (test mode)")
        self.method = method
        self.point = point


class LedgerOpenError(ServiceError):
    """The ledger file cannot be opened or created (a folder in the way, permissions)."""

    code = "ledger_unusable"
