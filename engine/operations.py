"""Operators' changes to a saga, the same for the HTTP admin routes and the CLI.

Each is decided by the pure core (`engine.core.cancel` / `resume`) on the saga's durable
log and applied by the log in one transaction that also bumps the epoch and leaves the
saga unowned: whoever was driving it is fenced at once, and the next runner (the
gateway's pump or the recovery daemon) claims it and drives it the normal way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from engine.core import SagaState, Transition, cancel, fold, record_reason, resume
from engine.definition import SagaDefinition
from engine.errors import EngineError
from engine.log import Change, SagaLog, SagaRecord

__all__ = ["CANCELLED_BY_OPERATOR", "UnknownDefinition", "cancel_saga", "retry_saga"]

CANCELLED_BY_OPERATOR = "cancelled_by_operator"


class UnknownDefinition(EngineError):
    code = "unknown_definition"


def _changer(
    definitions: Mapping[str, SagaDefinition],
    decide_change: Callable[[SagaDefinition, SagaState], Sequence[Transition]],
) -> Callable[[SagaRecord, Sequence[Transition]], Change]:
    def fn(record: SagaRecord, transitions: Sequence[Transition]) -> Change:
        defn = definitions.get(record.definition)
        if defn is None:
            raise UnknownDefinition(
                f"saga {record.id} uses definition {record.definition!r}, unknown here",
                saga_id=record.id,
            )
        state = fold(defn, transitions)
        changes = tuple(decide_change(defn, state))
        after = fold(defn, [*transitions, *changes])
        return Change(changes, after.status, record_reason(after))

    return fn


async def cancel_saga(
    log: SagaLog,
    definitions: Mapping[str, SagaDefinition],
    saga_id: str,
    *,
    actor: str,
    now_ms: int,
    reason: str = CANCELLED_BY_OPERATOR,
) -> SagaRecord:
    """Compensate a saga before its pivot. Raises CannotChange (past_pivot, saga_finished,
    already_compensating) or SagaNotFound."""

    def decide_change(defn: SagaDefinition, state: SagaState) -> Sequence[Transition]:
        return cancel(defn, state, reason)

    return await log.change(
        saga_id, _changer(definitions, decide_change), now_ms=now_ms, actor=actor
    )


async def retry_saga(
    log: SagaLog,
    definitions: Mapping[str, SagaDefinition],
    saga_id: str,
    *,
    actor: str,
    now_ms: int,
) -> SagaRecord:
    """Resume a NEEDS_ATTENTION saga with fresh attempt budgets. Raises CannotChange
    (not_parked) or SagaNotFound."""

    def decide_change(defn: SagaDefinition, state: SagaState) -> Sequence[Transition]:
        return resume(state, f"resumed by {actor}")

    return await log.change(
        saga_id, _changer(definitions, decide_change), now_ms=now_ms, actor=actor
    )
