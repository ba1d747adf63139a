"""Epoch fencing: a stale owner of an order cannot act after another has taken over.

Every mutating call carries its caller's epoch for the order in the `x-saga-epoch`
metadata (a decimal integer; absent means 0). Per order id, a ledger keeps the highest
epoch seen across its mutating calls, in the same transaction as the call's effect; a call
below it is refused (`EpochFenced`, ABORTED at the edge) before anything else happens, so a
paused owner is refused even when it repeats a call that once succeeded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import apsw

from services.common.errors import EpochFenced, InvalidArgument

__all__ = ["EPOCH_KEY", "FENCES_SCHEMA", "MAX_EPOCH", "epoch_from_metadata", "fence"]

EPOCH_KEY: Final = "x-saga-epoch"
MAX_EPOCH: Final = 2**63 - 1  # SQLite's INTEGER
_DIGITS: Final = re.compile(r"[0-9]{1,19}")

# Part of each ledger's first migration. Never edit: a change is a new migration.
FENCES_SCHEMA: Final = """
CREATE TABLE fences (
    order_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL CHECK (epoch >= 0)
) WITHOUT ROWID;
"""


def epoch_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> int:
    """The caller's epoch from gRPC metadata: 0 when absent, InvalidArgument when malformed."""
    values = [value for key, value in metadata or () if key.lower() == EPOCH_KEY]
    if not values:
        return 0
    if len(values) > 1:
        raise InvalidArgument(EPOCH_KEY, f"sent {len(values)} times; send it once")
    raw = values[0]
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    if not _DIGITS.fullmatch(text) or int(text) > MAX_EPOCH:
        raise InvalidArgument(
            EPOCH_KEY, f"{text[:40]!r} is not a decimal integer between 0 and {MAX_EPOCH}"
        )
    return int(text)


def fence(conn: apsw.Connection, order_id: str, epoch: int) -> None:
    """Refuse a stale epoch, else raise the order's highest seen epoch to `epoch`.

    Runs inside the caller's write unit: if the unit fails later, the raise rolls back
    with it, and a refusal changes nothing.
    """
    row = conn.execute("SELECT epoch FROM fences WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO fences (order_id, epoch) VALUES (?, ?)", (order_id, epoch))
        return
    highest = int(row[0])
    if epoch < highest:
        raise EpochFenced(order_id, epoch, highest)
    if epoch > highest:
        conn.execute("UPDATE fences SET epoch = ? WHERE order_id = ?", (epoch, order_id))
