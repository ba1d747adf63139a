"""The inventory ledger in PostgreSQL (schema `inventory_svc`), shared by every replica.

The rules are ledger.py's pure decisions; this module only reads the facts and writes the
outcome, with the locks that make replicas safe together: the order's fence row first
(services/common/pgcalls.py), then the products' rows in product-id order (`FOR UPDATE`),
so two replicas reserving the last units take turns and the second sees what the first
left. The CHECK on `available` backs the rule: stock never goes negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from engine.pg import PgConfig
from engine.pg.pool import Conn
from services.common.backend import PgBacked
from services.common.journal import Answer, MutatingCall
from services.common.paging import LedgerPage, PageRequest
from services.common.pgcalls import fences_schema, journal_schema, once
from services.common.pgstore import PgLedgerStore
from services.inventory.ledger import (
    Reservation,
    ReservationState,
    StockLine,
    StockView,
    decide_release,
    decide_reserve,
    describe,
    reservation_size,
)

__all__ = ["MIGRATIONS", "SCHEMA", "PgInventory", "open_store"]

SCHEMA: Final = "inventory_svc"
S: Final = SCHEMA

MIGRATIONS: Final[tuple[str, ...]] = (
    fences_schema(S)
    + journal_schema(S)
    + f"""
CREATE TABLE {S}.products (
    product_id TEXT COLLATE "C" PRIMARY KEY,
    initial BIGINT NOT NULL CHECK (initial >= 0),
    available BIGINT NOT NULL CHECK (available >= 0 AND available <= initial)
);
CREATE TABLE {S}.reservations (
    order_id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('RESERVED', 'RELEASED', 'REJECTED')),
    reason TEXT NOT NULL
);
CREATE TABLE {S}.reservation_items (
    order_id TEXT COLLATE "C" NOT NULL REFERENCES {S}.reservations (order_id),
    product_id TEXT COLLATE "C" NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
-- One row once the stock has been seeded: a ledger is seeded only when it is new.
CREATE TABLE {S}.seeded (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stock TEXT NOT NULL
);
""",
)


def open_store(cfg: PgConfig, seed: Sequence[StockLine]) -> PgLedgerStore:
    """The store of the inventory schema; a new ledger gets `seed` once, whichever
    replica gets there first."""

    async def prepare(conn: Conn) -> bool:
        return await _seed(conn, seed)

    return PgLedgerStore(cfg, schema=S, migrations=MIGRATIONS, prepare=prepare)


class PgInventory(PgBacked):
    async def reserve(self, order_id: str, epoch: int, lines: Sequence[StockLine]) -> Answer:
        ordered = sorted(lines)
        call = MutatingCall(order_id, "Reserve", describe(ordered), epoch)

        async def unit(conn: Conn) -> Answer:
            return await once(conn, S, call, lambda: _reserve(conn, order_id, ordered))

        return await self.store.write(unit)

    async def release(self, order_id: str, epoch: int) -> Answer:
        call = MutatingCall(order_id, "Release", "", epoch)

        async def unit(conn: Conn) -> Answer:
            return await once(conn, S, call, lambda: _release(conn, order_id))

        return await self.store.write(unit)

    async def reservation(self, order_id: str) -> Reservation:
        return await self.store.read(lambda conn: _reservation(conn, order_id))

    async def list_reservations(self, page: PageRequest) -> LedgerPage[Reservation]:
        return await self.store.read(lambda conn: _list_reservations(conn, page))

    async def stock(self, product_ids: Sequence[str] = ()) -> StockView:
        return await self.store.read(lambda conn: _stock(conn, product_ids))


async def _seed(conn: Conn, stock: Sequence[StockLine]) -> bool:
    text = ",".join(f"{product}={quantity}" for product, quantity in stock)
    first = await conn.fetchval(
        f"INSERT INTO {S}.seeded (id, stock) VALUES (1, $1) ON CONFLICT DO NOTHING RETURNING id",
        text,
    )
    if first is None:
        return False  # seeded before, maybe by another replica a moment ago
    await conn.executemany(
        f"INSERT INTO {S}.products (product_id, initial, available) VALUES ($1, $2, $2)",
        list(stock),
    )
    return True


async def _reserve(conn: Conn, order_id: str, lines: Sequence[StockLine]) -> Answer:
    # The order's own rows first (the fence row lock already guards them), the products'
    # locks last: they are the ones every order contends for, so they are held for as
    # few round trips as possible (this read, one write, the journal's, COMMIT).
    current = await _reservation(conn, order_id)
    available: dict[str, int] = {}
    if current.state is ReservationState.NONE:  # else the decision needs no stock
        rows = await conn.fetch(
            f"SELECT product_id, available FROM {S}.products"
            " WHERE product_id = ANY($1::text[]) ORDER BY product_id FOR UPDATE",
            [product for product, _ in lines],
        )
        available = {str(row["product_id"]): int(row["available"]) for row in rows}
    decision = decide_reserve(current, available, lines)
    if decision.state is not None:
        take = decision.state is ReservationState.RESERVED
        await _write(conn, order_id, decision.state, decision.answer.reason, lines, take=take)
    return decision.answer


async def _release(conn: Conn, order_id: str) -> Answer:
    current = await _reservation(conn, order_id)
    decision = decide_release(current)
    if current.state is ReservationState.RESERVED:
        await _give_back(conn, current.items)
        await conn.execute(
            f"UPDATE {S}.reservations SET state = $1 WHERE order_id = $2",
            ReservationState.RELEASED.value,
            order_id,
        )
    elif decision.state is not None:  # nothing reserved yet: the tombstone
        await _write(conn, order_id, decision.state, "", ())
    return decision.answer


async def _give_back(conn: Conn, lines: Sequence[StockLine]) -> None:
    """Return each line's quantity to its product's stock. The rows are locked first, in
    product-id order as Reserve locks them: an UPDATE over a join locks in whatever order
    its plan visits them, and two orders of the same products could then deadlock."""
    products = [product for product, _ in lines]
    if len(products) > 1:
        await conn.execute(
            f"SELECT 1 FROM {S}.products WHERE product_id = ANY($1::text[])"
            " ORDER BY product_id FOR UPDATE",
            products,
        )
    await conn.execute(
        f"UPDATE {S}.products AS p SET available = p.available + v.quantity"
        " FROM unnest($1::text[], $2::bigint[]) AS v (product_id, quantity)"
        " WHERE p.product_id = v.product_id",
        products,
        [quantity for _, quantity in lines],
    )


# One statement: the stock taken (when `$6`), the reservation and its items. The items'
# foreign key is checked at the end of the statement, when the reservation is there.
_WRITE: Final = f"""
WITH taken AS (
    UPDATE {S}.products AS p SET available = p.available - v.quantity
    FROM unnest($4::text[], $5::bigint[]) AS v (product_id, quantity)
    WHERE $6 AND p.product_id = v.product_id
), reservation AS (
    INSERT INTO {S}.reservations (order_id, state, reason) VALUES ($1, $2, $3)
)
INSERT INTO {S}.reservation_items (order_id, product_id, quantity)
SELECT $1, product_id, quantity FROM unnest($4::text[], $5::bigint[]) AS v (product_id, quantity)
"""


async def _write(
    conn: Conn,
    order_id: str,
    state: ReservationState,
    reason: str,
    lines: Sequence[StockLine],
    *,
    take: bool = False,
) -> None:
    """Record the order's reservation in `state` with its items; with `take`, the items'
    quantities come off the stock too."""
    await conn.execute(
        _WRITE,
        order_id,
        state.value,
        reason,
        [product for product, _ in lines],
        [quantity for _, quantity in lines],
        take,
    )


async def _reservation(conn: Conn, order_id: str) -> Reservation:
    row = await conn.fetchrow(
        f"SELECT state, reason FROM {S}.reservations WHERE order_id = $1", order_id
    )
    if row is None:
        return Reservation(order_id, ReservationState.NONE)
    items = await conn.fetch(
        f"SELECT product_id, quantity FROM {S}.reservation_items WHERE order_id = $1"
        " ORDER BY product_id",
        order_id,
    )
    return Reservation(
        order_id,
        ReservationState(row["state"]),
        tuple((str(item["product_id"]), int(item["quantity"])) for item in items),
        str(row["reason"]),
    )


async def _list_reservations(conn: Conn, page: PageRequest) -> LedgerPage[Reservation]:
    rows = await conn.fetch(
        f"SELECT order_id, state, reason FROM {S}.reservations WHERE order_id > $1"
        " ORDER BY order_id LIMIT $2",
        page.after,
        page.limit + 1,
    )
    items: dict[str, list[StockLine]] = {}
    if rows:
        for item in await conn.fetch(
            f"SELECT order_id, product_id, quantity FROM {S}.reservation_items"
            " WHERE order_id > $1 AND order_id <= $2 ORDER BY order_id, product_id",
            page.after,
            rows[-1]["order_id"],
        ):
            items.setdefault(str(item["order_id"]), []).append(
                (str(item["product_id"]), int(item["quantity"]))
            )
    records = [
        Reservation(
            str(row["order_id"]),
            ReservationState(row["state"]),
            tuple(items.get(str(row["order_id"]), ())),
            str(row["reason"]),
        )
        for row in rows
    ]
    return LedgerPage.of(records, page.limit, lambda r: r.order_id, reservation_size)


async def _stock(conn: Conn, product_ids: Sequence[str]) -> StockView:
    held = {
        str(row["product_id"]): int(row["held"])
        for row in await conn.fetch(
            f"SELECT i.product_id, SUM(i.quantity) AS held FROM {S}.reservation_items AS i"
            f" JOIN {S}.reservations AS r USING (order_id)"
            " WHERE r.state = 'RESERVED' GROUP BY i.product_id"
        )
    }
    wanted = set(product_ids)
    available: dict[str, int] = {}
    initial: dict[str, int] = {}
    for row in await conn.fetch(
        f"SELECT product_id, initial, available FROM {S}.products ORDER BY product_id"
    ):
        name = str(row["product_id"])
        if not wanted or name in wanted:
            initial[name], available[name] = int(row["initial"]), int(row["available"])
    return StockView(available, initial, {name: held.get(name, 0) for name in initial})
