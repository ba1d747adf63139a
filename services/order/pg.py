"""The order ledger in PostgreSQL (schema `order_svc`), shared by every replica.

The rules are ledger.py's pure decisions; this module reads the facts and writes the
outcome. The order's fence row lock (services/common/pgcalls.py) serializes the calls of
one order across replicas: two replicas creating the same order at once create it once,
and the second answers the order as the first made it. A trigger refuses to move a
terminal status, as in the SQLite ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg

from engine.pg import PgConfig
from engine.pg.pool import Conn
from services.common.backend import PgBacked
from services.common.errors import NotFound
from services.common.paging import LedgerPage, PageRequest
from services.common.pgcalls import fence, fences_schema
from services.common.pgstore import PgLedgerStore
from services.order.ledger import (
    LedgerOrder,
    LedgerStatus,
    OrderLine,
    check_repeat,
    decide_status,
    new_order,
    order_size,
)

__all__ = ["MIGRATIONS", "SCHEMA", "PgOrders", "open_store"]

SCHEMA: Final = "order_svc"
S: Final = SCHEMA

MIGRATIONS: Final[tuple[str, ...]] = (
    fences_schema(S)
    + f"""
CREATE TABLE {S}.orders (
    id TEXT COLLATE "C" PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    total_cents BIGINT NOT NULL CHECK (total_cents > 0),
    reason TEXT NOT NULL
);
CREATE TABLE {S}.order_items (
    order_id TEXT COLLATE "C" NOT NULL REFERENCES {S}.orders (id),
    position INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents > 0),
    PRIMARY KEY (order_id, position)
);
CREATE FUNCTION {S}.terminal_status_never_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'PENDING' AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'a terminal order status never changes'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER terminal_status_never_changes
BEFORE UPDATE OF status ON {S}.orders
FOR EACH ROW EXECUTE FUNCTION {S}.terminal_status_never_changes();
""",
)

_COLUMNS: Final = "id, customer_id, status, total_cents, reason"


def open_store(cfg: PgConfig) -> PgLedgerStore:
    return PgLedgerStore(cfg, schema=S, migrations=MIGRATIONS)


class PgOrders(PgBacked):
    async def create(
        self, order_id: str, epoch: int, customer_id: str, lines: Sequence[OrderLine]
    ) -> LedgerOrder:
        async def unit(conn: Conn) -> LedgerOrder:
            await fence(conn, S, order_id, epoch)
            existing = await _get(conn, order_id)
            if existing is not None:
                return check_repeat(existing, customer_id, lines)
            order = new_order(order_id, customer_id, lines)
            await conn.execute(
                f"INSERT INTO {S}.orders ({_COLUMNS}) VALUES ($1, $2, $3, $4, '')",
                order.id,
                order.customer_id,
                order.status.value,
                order.total_cents,
            )
            await conn.executemany(
                f"INSERT INTO {S}.order_items"
                " (order_id, position, product_id, quantity, unit_price_cents)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(order_id, i, *line) for i, line in enumerate(lines)],
            )
            return order

        return await self.store.write(unit)

    async def update_status(
        self, order_id: str, epoch: int, status: LedgerStatus, reason: str = ""
    ) -> bool:
        """Move a PENDING order to CONFIRMED or CANCELLED; False if it is in the other one."""
        if status is LedgerStatus.PENDING:
            raise ValueError("an order cannot be moved back to PENDING")

        async def unit(conn: Conn) -> bool:
            await fence(conn, S, order_id, epoch)
            current = await conn.fetchval(f"SELECT status FROM {S}.orders WHERE id = $1", order_id)
            if current is None:
                raise NotFound(order_id)
            success, write = decide_status(LedgerStatus(current), status)
            if write:
                await conn.execute(
                    f"UPDATE {S}.orders SET status = $1, reason = $2 WHERE id = $3",
                    status.value,
                    reason if status is LedgerStatus.CANCELLED else "",
                    order_id,
                )
            return success

        return await self.store.write(unit)

    async def get(self, order_id: str) -> LedgerOrder | None:
        return await self.store.read(lambda conn: _get(conn, order_id))

    async def list_orders(self, page: PageRequest) -> LedgerPage[LedgerOrder]:
        return await self.store.read(lambda conn: _list_orders(conn, page))


async def _get(conn: Conn, order_id: str) -> LedgerOrder | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {S}.orders WHERE id = $1", order_id)
    if row is None:
        return None
    lines = await conn.fetch(
        f"SELECT product_id, quantity, unit_price_cents FROM {S}.order_items"
        " WHERE order_id = $1 ORDER BY position",
        order_id,
    )
    return _order(row, lines)


async def _list_orders(conn: Conn, page: PageRequest) -> LedgerPage[LedgerOrder]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {S}.orders WHERE id > $1 ORDER BY id LIMIT $2",
        page.after,
        page.limit + 1,
    )
    lines: dict[str, list[asyncpg.Record]] = {}
    if rows:
        for line in await conn.fetch(
            f"SELECT order_id, product_id, quantity, unit_price_cents FROM {S}.order_items"
            " WHERE order_id > $1 AND order_id <= $2 ORDER BY order_id, position",
            page.after,
            rows[-1]["id"],
        ):
            lines.setdefault(str(line["order_id"]), []).append(line)
    orders = [_order(row, lines.get(str(row["id"]), [])) for row in rows]
    return LedgerPage.of(orders, page.limit, lambda o: o.id, order_size)


def _order(row: asyncpg.Record, lines: Iterable[asyncpg.Record]) -> LedgerOrder:
    items = tuple(
        (str(line["product_id"]), int(line["quantity"]), int(line["unit_price_cents"]))
        for line in lines
    )
    return LedgerOrder(
        str(row["id"]),
        str(row["customer_id"]),
        items,
        LedgerStatus(row["status"]),
        int(row["total_cents"]),
        str(row["reason"]),
    )
