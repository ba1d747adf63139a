"""The order domain's error root. Each derives from the engine's, so every edge that maps
an EngineError (the CLI's one line, the gateway's table) maps these too."""

from __future__ import annotations

from engine.errors import EngineError

__all__ = ["AuditUnavailable", "CallRefused", "NoParticipants", "OrderError"]


class OrderError(EngineError):
    code = "order_error"


class CallRefused(OrderError):
    """A participant rejected the request itself (invalid, precondition): not retried."""

    code = "participant_refused"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class NoParticipants(OrderError):
    """A step of a definition built without clients (`order_saga_shape`) was called."""

    code = "no_participants"


class AuditUnavailable(OrderError):
    """A service's audit query cannot be answered: the audit cannot judge."""

    code = "audit_unavailable"
