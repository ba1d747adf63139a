"""The epoch fence and the journal of mutating calls, in PostgreSQL, for ledgers shared by
several replicas. Same protocol as services/common/fencing.py and journal.py (whose rules
and docs hold here), with what concurrency across replicas adds:

- `fence` is one upsert that keeps the highest epoch. It takes the order's fence row lock
  for the rest of the transaction, so every mutating call of one order, on whichever
  replica, runs after the previous one committed: the journal look-up that follows sees
  an earlier call's record (READ COMMITTED: each statement reads the latest commit), and
  two replicas inserting the same call at once apply it once.
- A stale epoch is refused without raising anything: GREATEST keeps the old value, and the
  refusal rolls the transaction back anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from engine.pg.pool import Conn
from services.common.errors import ConflictingRepeat, EpochFenced
from services.common.journal import Answer, MutatingCall

__all__ = ["fence", "fences_schema", "journal_schema", "once"]


def fences_schema(schema: str) -> str:
    """Part of each PostgreSQL ledger's first migration. Never edit: add a migration."""
    return f"""
CREATE TABLE {schema}.fences (
    order_id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL CHECK (epoch >= 0)
);
"""


def journal_schema(schema: str) -> str:
    """Part of each PostgreSQL ledger's first migration. Never edit: add a migration."""
    return f"""
CREATE TABLE {schema}.journal (
    order_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    request TEXT NOT NULL,
    success BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (order_id, operation)
);
"""


_FENCE: Final = """
INSERT INTO {schema}.fences AS f (order_id, epoch) VALUES ($1, $2)
ON CONFLICT (order_id) DO UPDATE SET epoch = GREATEST(f.epoch, EXCLUDED.epoch)
RETURNING epoch
"""


async def fence(conn: Conn, schema: str, order_id: str, epoch: int) -> None:
    """Refuse a stale epoch, else raise the order's highest seen epoch to `epoch`; holds
    the order's fence row lock until the transaction ends."""
    highest = int(await conn.fetchval(_FENCE.format(schema=schema), order_id, epoch))
    if epoch < highest:
        raise EpochFenced(order_id, epoch, highest)


async def once(
    conn: Conn,
    schema: str,
    call: MutatingCall,
    effect: Callable[[], Awaitable[Answer]],
) -> Answer:
    """Fence, then answer a repeat from the journal, else apply `effect` and record it."""
    await fence(conn, schema, call.order_id, call.epoch)
    row = await conn.fetchrow(
        f"SELECT request, success, reason FROM {schema}.journal"
        " WHERE order_id = $1 AND operation = $2",
        call.order_id,
        call.operation,
    )
    if row is not None:
        first_request = str(row["request"])
        if first_request != call.request:
            raise ConflictingRepeat(
                call.order_id, call.operation, f"{first_request} (now {call.request})"
            )
        return Answer(bool(row["success"]), str(row["reason"]))
    answer = await effect()
    await conn.execute(
        f"INSERT INTO {schema}.journal (order_id, operation, request, success, reason, epoch)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        call.order_id,
        call.operation,
        call.request,
        answer.success,
        answer.reason,
        call.epoch,
    )
    return answer
