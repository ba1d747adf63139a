"""The payment ledger in PostgreSQL (schema `payment_svc`), shared by every replica.

The rules are ledger.py's pure decisions; this module reads the facts and writes the
outcome. The order's fence row lock (services/common/pgcalls.py) serializes the calls of
one order across replicas, so a charge and a refund of one order never interleave.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from engine.pg import PgConfig
from engine.pg.pool import Conn
from services.common.backend import PgBacked
from services.common.journal import Answer, MutatingCall
from services.common.paging import LedgerPage, PageRequest
from services.common.pgcalls import fences_schema, journal_schema, once
from services.common.pgstore import PgLedgerStore
from services.payment.ledger import (
    Payment,
    PaymentState,
    charge_request,
    decide_charge,
    decide_refund,
)

__all__ = ["MIGRATIONS", "SCHEMA", "PgPayment", "open_store"]

SCHEMA: Final = "payment_svc"
S: Final = SCHEMA

MIGRATIONS: Final[tuple[str, ...]] = (
    fences_schema(S)
    + journal_schema(S)
    + f"""
CREATE TABLE {S}.payments (
    order_id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('CHARGED', 'REFUNDED', 'DECLINED')),
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    customer_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
""",
)

_COLUMNS: Final = "order_id, state, amount_cents, customer_id, reason"


def open_store(cfg: PgConfig) -> PgLedgerStore:
    return PgLedgerStore(cfg, schema=S, migrations=MIGRATIONS)


class PgPayment(PgBacked):
    async def charge(
        self, order_id: str, epoch: int, amount_cents: int, customer_id: str = ""
    ) -> Answer:
        call = MutatingCall(order_id, "Charge", charge_request(amount_cents), epoch)

        async def unit(conn: Conn) -> Answer:
            return await once(
                conn, S, call, lambda: _charge(conn, order_id, amount_cents, customer_id)
            )

        return await self.store.write(unit)

    async def refund(self, order_id: str, epoch: int) -> Answer:
        call = MutatingCall(order_id, "Refund", "", epoch)

        async def unit(conn: Conn) -> Answer:
            return await once(conn, S, call, lambda: _refund(conn, order_id))

        return await self.store.write(unit)

    async def payment(self, order_id: str) -> Payment:
        return await self.store.read(lambda conn: _payment(conn, order_id))

    async def list_payments(self, page: PageRequest) -> LedgerPage[Payment]:
        return await self.store.read(lambda conn: _list_payments(conn, page))


async def _charge(conn: Conn, order_id: str, amount_cents: int, customer_id: str) -> Answer:
    decision = decide_charge(await _payment(conn, order_id), amount_cents)
    if decision.state is not None:
        await conn.execute(
            f"INSERT INTO {S}.payments ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
            order_id,
            decision.state.value,
            amount_cents,
            customer_id,
            decision.answer.reason,
        )
    return decision.answer


async def _refund(conn: Conn, order_id: str) -> Answer:
    current = await _payment(conn, order_id)
    decision = decide_refund(current)
    if current.state is PaymentState.CHARGED:
        await conn.execute(
            f"UPDATE {S}.payments SET state = $1 WHERE order_id = $2",
            PaymentState.REFUNDED.value,
            order_id,
        )
    elif decision.state is not None:  # nothing charged yet: the tombstone
        await conn.execute(
            f"INSERT INTO {S}.payments ({_COLUMNS}) VALUES ($1, $2, 0, '', '')",
            order_id,
            decision.state.value,
        )
    return decision.answer


async def _payment(conn: Conn, order_id: str) -> Payment:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {S}.payments WHERE order_id = $1", order_id)
    return Payment(order_id, PaymentState.NONE) if row is None else _record(row)


async def _list_payments(conn: Conn, page: PageRequest) -> LedgerPage[Payment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {S}.payments WHERE order_id > $1 ORDER BY order_id LIMIT $2",
        page.after,
        page.limit + 1,
    )
    return LedgerPage.of([_record(row) for row in rows], page.limit, lambda p: p.order_id)


def _record(row: asyncpg.Record) -> Payment:
    return Payment(
        str(row["order_id"]),
        PaymentState(row["state"]),
        int(row["amount_cents"]),
        str(row["customer_id"]),
        str(row["reason"]),
    )
