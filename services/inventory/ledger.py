"""The inventory ledger: stock per product and one reservation per order.

Plain functions over an apsw connection; each mutating one is meant to be ONE write unit
of the service's Writer (see `services.common.journal.once`). The business rules:

- Reserve takes every item or none. It is rejected (state REJECTED) with `unknown_product`
  when a product is not in the ledger, else with `out_of_stock` when one is short. After a
  Release of the same order it is refused with `already_released` (the tombstone wins).
- Release gives a RESERVED order's stock back (RELEASED). With nothing reserved it leaves
  a RELEASED tombstone so that a late Reserve is refused; a REJECTED order stays REJECTED.
  Release always succeeds.
- Stock is never negative and never above its seed: CHECK constraints back the rules.

The decisions are pure functions (`decide_reserve`, `decide_release`) of what the ledger
holds; the functions around them only read the facts and write the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import apsw

from services.common.fencing import FENCES_SCHEMA
from services.common.journal import JOURNAL_SCHEMA, Answer, MutatingCall, once
from services.common.paging import LedgerPage, PageRequest

__all__ = [
    "MIGRATIONS",
    "Reason",
    "Reservation",
    "ReservationState",
    "StockLine",
    "StockView",
    "decide_release",
    "decide_reserve",
    "describe",
    "list_reservations",
    "release",
    "reservation",
    "reservation_size",
    "reserve",
    "seed",
    "stock",
]

StockLine = tuple[str, int]  # (product id, quantity)

MIGRATIONS: Final[tuple[str, ...]] = (
    FENCES_SCHEMA
    + JOURNAL_SCHEMA
    + """
CREATE TABLE products (
    product_id TEXT PRIMARY KEY,
    initial INTEGER NOT NULL CHECK (initial >= 0),
    available INTEGER NOT NULL CHECK (available >= 0 AND available <= initial)
) WITHOUT ROWID;
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('RESERVED', 'RELEASED', 'REJECTED')),
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
) WITHOUT ROWID;
-- One row once the stock has been seeded: a ledger is seeded only when it is new.
CREATE TABLE seeded (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stock TEXT NOT NULL
);
""",
)


class ReservationState(StrEnum):
    NONE = "NONE"
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    REJECTED = "REJECTED"


class Reason(StrEnum):
    UNKNOWN_PRODUCT = "unknown_product"
    OUT_OF_STOCK = "out_of_stock"
    ALREADY_RELEASED = "already_released"


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    state: ReservationState
    items: tuple[StockLine, ...] = ()  # sorted by product id
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StockView:
    """Per product: available + reserved = initial, unless the ledger is broken."""

    available: Mapping[str, int]
    initial: Mapping[str, int]
    reserved: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Decision:
    answer: Answer
    state: ReservationState | None  # the order's new state; None leaves the ledger as is


# --- pure decisions ------------------------------------------------------------------


def decide_reserve(
    current: Reservation, available: Mapping[str, int], lines: Sequence[StockLine]
) -> Decision:
    """Reserve `lines` for an order in state `current`, given the known products' stock."""
    if current.state is ReservationState.RELEASED:
        return Decision(Answer(False, Reason.ALREADY_RELEASED), None)
    if current.state is ReservationState.RESERVED:
        return Decision(Answer(True), None)
    if current.state is ReservationState.REJECTED:
        return Decision(Answer(False, current.reason), None)
    if any(product not in available for product, _ in lines):
        return Decision(Answer(False, Reason.UNKNOWN_PRODUCT), ReservationState.REJECTED)
    if any(available[product] < quantity for product, quantity in lines):
        return Decision(Answer(False, Reason.OUT_OF_STOCK), ReservationState.REJECTED)
    return Decision(Answer(True), ReservationState.RESERVED)


def decide_release(current: Reservation) -> Decision:
    if current.state in (ReservationState.NONE, ReservationState.RESERVED):
        return Decision(Answer(True), ReservationState.RELEASED)
    return Decision(Answer(True), None)  # already RELEASED, or REJECTED: nothing is held


# --- mutations (each one write unit) -------------------------------------------------


def seed(conn: apsw.Connection, stock: Sequence[StockLine]) -> bool:
    """Give a new ledger its initial stock; False (and no change) if it was seeded before."""
    if conn.execute("SELECT 1 FROM seeded").fetchone() is not None:
        return False
    conn.executemany(
        "INSERT INTO products (product_id, initial, available) VALUES (?, ?, ?)",
        [(product, quantity, quantity) for product, quantity in stock],
    )
    conn.execute(
        "INSERT INTO seeded (id, stock) VALUES (1, ?)",
        (",".join(f"{product}={quantity}" for product, quantity in stock),),
    )
    return True


def reserve(conn: apsw.Connection, order_id: str, epoch: int, lines: Sequence[StockLine]) -> Answer:
    ordered = sorted(lines)
    call = MutatingCall(order_id, "Reserve", describe(ordered), epoch)
    return once(conn, call, lambda: _reserve(conn, order_id, ordered))


def _reserve(conn: apsw.Connection, order_id: str, lines: Sequence[StockLine]) -> Answer:
    available: dict[str, int] = {}
    for product, _ in lines:
        row = conn.execute(
            "SELECT available FROM products WHERE product_id = ?", (product,)
        ).fetchone()
        if row is not None:
            available[product] = int(row[0])
    decision = decide_reserve(reservation(conn, order_id), available, lines)
    if decision.state is ReservationState.RESERVED:
        conn.executemany(
            "UPDATE products SET available = available - ? WHERE product_id = ?",
            [(quantity, product) for product, quantity in lines],
        )
    if decision.state is not None:
        _write(conn, order_id, decision.state, decision.answer.reason, lines)
    return decision.answer


def release(conn: apsw.Connection, order_id: str, epoch: int) -> Answer:
    return once(
        conn, MutatingCall(order_id, "Release", "", epoch), lambda: _release(conn, order_id)
    )


def _release(conn: apsw.Connection, order_id: str) -> Answer:
    current = reservation(conn, order_id)
    decision = decide_release(current)
    if current.state is ReservationState.RESERVED:
        conn.executemany(
            "UPDATE products SET available = available + ? WHERE product_id = ?",
            [(quantity, product) for product, quantity in current.items],
        )
        conn.execute(
            "UPDATE reservations SET state = ? WHERE order_id = ?",
            (ReservationState.RELEASED, order_id),
        )
    elif decision.state is not None:  # nothing reserved yet: the tombstone
        _write(conn, order_id, decision.state, "", ())
    return decision.answer


def _write(
    conn: apsw.Connection,
    order_id: str,
    state: ReservationState,
    reason: str,
    lines: Iterable[StockLine],
) -> None:
    conn.execute(
        "INSERT INTO reservations (order_id, state, reason) VALUES (?, ?, ?)",
        (order_id, state, reason),
    )
    conn.executemany(
        "INSERT INTO reservation_items (order_id, product_id, quantity) VALUES (?, ?, ?)",
        [(order_id, product, quantity) for product, quantity in lines],
    )


def describe(lines: Iterable[StockLine]) -> str:
    return "items " + ",".join(f"{product}x{quantity}" for product, quantity in lines)


# --- queries -------------------------------------------------------------------------


def reservation(conn: apsw.Connection, order_id: str) -> Reservation:
    """The order's reservation; state NONE when the ledger has never heard of it."""
    row = conn.execute(
        "SELECT state, reason FROM reservations WHERE order_id = ?", (order_id,)
    ).fetchone()
    if row is None:
        return Reservation(order_id, ReservationState.NONE)
    items = conn.execute(
        "SELECT product_id, quantity FROM reservation_items WHERE order_id = ? ORDER BY product_id",
        (order_id,),
    )
    return Reservation(
        order_id,
        ReservationState(row[0]),
        tuple((str(product), int(quantity)) for product, quantity in items),
        str(row[1]),
    )


def list_reservations(conn: apsw.Connection, page: PageRequest) -> LedgerPage[Reservation]:
    rows = list(
        conn.execute(
            "SELECT order_id, state, reason FROM reservations WHERE order_id > ?"
            " ORDER BY order_id LIMIT ?",
            (page.after, page.limit + 1),
        )
    )
    items: dict[str, list[StockLine]] = {}
    if rows:
        for order_id, product, quantity in conn.execute(
            "SELECT order_id, product_id, quantity FROM reservation_items"
            " WHERE order_id > ? AND order_id <= ? ORDER BY order_id, product_id",
            (page.after, rows[-1][0]),
        ):
            items.setdefault(str(order_id), []).append((str(product), int(quantity)))
    records = [
        Reservation(
            str(order_id),
            ReservationState(state),
            tuple(items.get(str(order_id), ())),
            str(reason),
        )
        for order_id, state, reason in rows
    ]
    return LedgerPage.of(records, page.limit, lambda r: r.order_id, reservation_size)


def reservation_size(record: Reservation) -> int:
    """About the bytes of a record on the wire, to keep a page under the message limit."""
    return 32 + len(record.order_id) + sum(16 + len(product) for product, _ in record.items)


def stock(conn: apsw.Connection, product_ids: Sequence[str] = ()) -> StockView:
    """Stock of the named products (every product when none is named); unknown ones are
    left out. `reserved` is summed from the RESERVED reservations themselves, so that
    initial = available + reserved is a real check of the ledger, not a tautology."""
    held: dict[str, int] = {
        str(product): int(quantity)
        for product, quantity in conn.execute(
            "SELECT i.product_id, SUM(i.quantity) FROM reservation_items AS i"
            " JOIN reservations AS r USING (order_id)"
            " WHERE r.state = 'RESERVED' GROUP BY i.product_id"
        )
    }
    wanted = set(product_ids)
    available: dict[str, int] = {}
    initial: dict[str, int] = {}
    for product, first, now in conn.execute(
        "SELECT product_id, initial, available FROM products ORDER BY product_id"
    ):
        name = str(product)
        if not wanted or name in wanted:
            initial[name], available[name] = int(first), int(now)
    reserved = {name: held.get(name, 0) for name in initial}
    return StockView(available, initial, reserved)
