"""Operators' changes to a saga, the same for the HTTP admin routes and the CLI.

Each is decided by the pure core (`engine.core.cancel` / `resume`) on the saga's durable
log and applied by the log in one transaction that also bumps the epoch and leaves the
saga unowned: whoever was driving it is fenced at once, and the next runner (the
gateway's pump or the recovery daemon) claims it and drives it the normal way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from engine.core import SagaState, Transition, cancel, fold, record_reason, resume
from engine.definition import SagaDefinition
from engine.errors import EngineError
from engine.saga_log import Change, Pruned, SagaLog, SagaRecord

__all__ = [
    "CANCELLED_BY_OPERATOR",
    "PRUNE_BATCH",
    "PRUNE_PAUSE_S",
    "UnknownDefinition",
    "cancel_saga",
    "prune_history",
    "retry_saga",
]

CANCELLED_BY_OPERATOR = "cancelled_by_operator"
# Between two batches of a prune, the write lock is left free a moment, so that the other
# processes' writers (the gateway's) get it between batches rather than only when the lock
# sharing of engine/sqlite.py steps in; the batch keeps each hold of the lock short. What
# these cost and save is measured in docs/operations.md (Retention).
PRUNE_PAUSE_S = 0.02
# Sagas looked at per prune transaction.
PRUNE_BATCH = 500


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


async def prune_history(
    log: SagaLog,
    *,
    finished_before_ms: int,
    batch: int = PRUNE_BATCH,
    dry_run: bool = False,
    on_batch: Callable[[Pruned], None] | None = None,
    pause_s: float = PRUNE_PAUSE_S,
) -> Pruned:
    """Compact the history of every saga that finished before `finished_before_ms` (see
    `SagaLog.prune_history`), `batch` sagas per transaction so that each holds the write
    lock only briefly on a live system, with `pause_s` between them. Returns the totals."""
    examined = sagas = transitions = 0
    cursor: str | None = None
    while True:
        part = await log.prune_history(
            finished_before_ms=finished_before_ms, limit=batch, cursor=cursor, dry_run=dry_run
        )
        examined, sagas = examined + part.examined, sagas + part.sagas
        transitions += part.transitions
        if on_batch is not None:
            on_batch(part)
        cursor = part.next_cursor
        if cursor is None:
            return Pruned(examined, sagas, transitions, None)
        if not dry_run:  # a dry run only reads: it takes no write lock
            await asyncio.sleep(pause_s)
