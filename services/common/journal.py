"""De-duplication of mutating calls: a repeat of (order id, operation) gets the first answer.

`once` is the whole protocol of a mutating call, run inside ONE write unit: the epoch
fence, the look-up of an earlier answer, the effect, and the record of its answer. The
unit commits all of it or none of it, so a crash can never leave an effect without its
record (which would apply it twice on a retry) or a record without its effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import apsw

from services.common.errors import ConflictingRepeat
from services.common.fencing import fence

__all__ = ["JOURNAL_SCHEMA", "Answer", "MutatingCall", "once"]

# Part of each ledger's first migration. Never edit: a change is a new migration.
JOURNAL_SCHEMA: Final = """
CREATE TABLE journal (
    order_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    request TEXT NOT NULL,
    success INTEGER NOT NULL CHECK (success IN (0, 1)),
    reason TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (order_id, operation)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a mutating call answered: success, and why not."""

    success: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MutatingCall:
    """One mutating call. `request` is the canonical text of its payload: a repeat must
    carry the same one (e.g. `prod_1x2,prod_2x1` for a Reserve)."""

    order_id: str
    operation: str
    request: str
    epoch: int


def once(conn: apsw.Connection, call: MutatingCall, effect: Callable[[], Answer]) -> Answer:
    """Fence, then answer a repeat from the journal, else apply `effect` and record it."""
    fence(conn, call.order_id, call.epoch)
    row = conn.execute(
        "SELECT request, success, reason FROM journal WHERE order_id = ? AND operation = ?",
        (call.order_id, call.operation),
    ).fetchone()
    if row is not None:
        first_request, success, reason = str(row[0]), bool(row[1]), str(row[2])
        if first_request != call.request:
            raise ConflictingRepeat(
                call.order_id, call.operation, f"{first_request} (now {call.request})"
            )
        return Answer(success, reason)
    answer = effect()
    conn.execute(
        "INSERT INTO journal (order_id, operation, request, success, reason, epoch)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (call.order_id, call.operation, call.request, answer.success, answer.reason, call.epoch),
    )
    return answer
