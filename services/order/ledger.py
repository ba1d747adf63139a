"""The order ledger: the order records and their status.

Plain functions over an apsw connection; each mutating one is meant to be ONE write unit
of the service's Writer, fenced by the caller's epoch for that order id. The rules:

- CreateOrder is idempotent on the id: the same id again returns the order as it is now;
  the same id with another customer or other items is a caller bug (`ConflictingRepeat`).
  total_cents = sum(quantity * unit_price_cents).
- A status moves only from PENDING to CONFIRMED or CANCELLED (with its reason). Asking for
  the status an order already has succeeds and changes nothing (the first reason stays);
  asking for the other terminal status fails (success false). A trigger refuses any other
  change, so a bug elsewhere cannot move a terminal order either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import apsw

from services.common.errors import ConflictingRepeat, NotFound
from services.common.fencing import FENCES_SCHEMA, fence
from services.common.paging import LedgerPage, PageRequest

__all__ = [
    "MIGRATIONS",
    "LedgerOrder",
    "LedgerStatus",
    "OrderLine",
    "check_repeat",
    "create",
    "decide_status",
    "get",
    "list_orders",
    "new_order",
    "order_size",
    "total_cents",
    "update_status",
]

OrderLine = tuple[str, int, int]  # (product id, quantity, unit price in cents)

MIGRATIONS: Final[tuple[str, ...]] = (
    FENCES_SCHEMA
    + """
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    total_cents INTEGER NOT NULL CHECK (total_cents > 0),
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders (id),
    position INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents > 0),
    PRIMARY KEY (order_id, position)
) WITHOUT ROWID;
CREATE TRIGGER terminal_status_never_changes
BEFORE UPDATE OF status ON orders
WHEN OLD.status <> 'PENDING' AND NEW.status <> OLD.status
BEGIN
    SELECT RAISE(ABORT, 'a terminal order status never changes');
END;
""",
)


class LedgerStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class LedgerOrder:
    id: str
    customer_id: str
    items: tuple[OrderLine, ...]  # in the order they were given
    status: LedgerStatus
    total_cents: int
    reason: str = ""


# --- pure decisions ------------------------------------------------------------------


def total_cents(lines: Iterable[OrderLine]) -> int:
    return sum(quantity * price for _, quantity, price in lines)


def decide_status(current: LedgerStatus, requested: LedgerStatus) -> tuple[bool, bool]:
    """(success, whether to write) for a move from `current` to a terminal `requested`."""
    if current is LedgerStatus.PENDING:
        return True, True
    return current is requested, False


def new_order(order_id: str, customer_id: str, lines: Sequence[OrderLine]) -> LedgerOrder:
    return LedgerOrder(
        order_id, customer_id, tuple(lines), LedgerStatus.PENDING, total_cents(lines)
    )


def check_repeat(
    existing: LedgerOrder, customer_id: str, lines: Sequence[OrderLine]
) -> LedgerOrder:
    """A CreateOrder of an existing id: the order as it is now, if the call is the same."""
    if existing.customer_id != customer_id or sorted(existing.items) != sorted(lines):
        raise ConflictingRepeat(
            existing.id,
            "CreateOrder",
            f"customer {existing.customer_id!r} and items {_describe(existing.items)} "
            f"(now customer {customer_id!r} and items {_describe(lines)})",
        )
    return existing


# --- mutations (each one write unit) -------------------------------------------------


def create(
    conn: apsw.Connection, order_id: str, epoch: int, customer_id: str, lines: Sequence[OrderLine]
) -> LedgerOrder:
    fence(conn, order_id, epoch)
    existing = get(conn, order_id)
    if existing is not None:
        return check_repeat(existing, customer_id, lines)
    order = new_order(order_id, customer_id, lines)
    conn.execute(
        "INSERT INTO orders (id, customer_id, status, total_cents, reason) VALUES (?, ?, ?, ?, '')",
        (order.id, order.customer_id, order.status, order.total_cents),
    )
    conn.executemany(
        "INSERT INTO order_items (order_id, position, product_id, quantity, unit_price_cents)"
        " VALUES (?, ?, ?, ?, ?)",
        [(order_id, i, *line) for i, line in enumerate(lines)],
    )
    return order


def update_status(
    conn: apsw.Connection, order_id: str, epoch: int, status: LedgerStatus, reason: str = ""
) -> bool:
    """Move a PENDING order to CONFIRMED or CANCELLED; False if it is in the other one."""
    if status is LedgerStatus.PENDING:
        raise ValueError("an order cannot be moved back to PENDING")
    fence(conn, order_id, epoch)
    row = conn.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise NotFound(order_id)
    success, write = decide_status(LedgerStatus(row[0]), status)
    if write:
        conn.execute(
            "UPDATE orders SET status = ?, reason = ? WHERE id = ?",
            (status, reason if status is LedgerStatus.CANCELLED else "", order_id),
        )
    return success


def _describe(lines: Iterable[OrderLine]) -> str:
    return ",".join(f"{p}x{q}@{c}" for p, q, c in sorted(lines))


# --- queries -------------------------------------------------------------------------

_COLUMNS: Final = "id, customer_id, status, total_cents, reason"


def get(conn: apsw.Connection, order_id: str) -> LedgerOrder | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    lines = conn.execute(
        "SELECT order_id, product_id, quantity, unit_price_cents FROM order_items"
        " WHERE order_id = ? ORDER BY position",
        (order_id,),
    )
    return _order(row, [(p, q, c) for _, p, q, c in lines])


def list_orders(conn: apsw.Connection, page: PageRequest) -> LedgerPage[LedgerOrder]:
    rows = list(
        conn.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE id > ? ORDER BY id LIMIT ?",
            (page.after, page.limit + 1),
        )
    )
    lines: dict[str, list[Any]] = {}
    if rows:
        for order_id, product, quantity, price in conn.execute(
            "SELECT order_id, product_id, quantity, unit_price_cents FROM order_items"
            " WHERE order_id > ? AND order_id <= ? ORDER BY order_id, position",
            (page.after, rows[-1][0]),
        ):
            lines.setdefault(order_id, []).append((product, quantity, price))
    orders = [_order(row, lines.get(row[0], [])) for row in rows]
    return LedgerPage.of(orders, page.limit, lambda o: o.id, order_size)


def order_size(order: LedgerOrder) -> int:
    """About the bytes of an order on the wire, to keep a page under the message limit."""
    fixed = 48 + len(order.id) + len(order.customer_id) + len(order.reason)
    return fixed + sum(24 + len(product) for product, _, _ in order.items)


def _order(row: Any, lines: Iterable[Any]) -> LedgerOrder:  # an apsw row of _COLUMNS, item rows
    order_id, customer, status, total, reason = row
    items = tuple((str(p), int(q), int(c)) for p, q, c in lines)
    return LedgerOrder(
        str(order_id), str(customer), items, LedgerStatus(status), int(total), str(reason)
    )
