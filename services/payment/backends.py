"""The payment ledger's port, its SQLite adapter, and the one function that opens the
ledger a service's settings name (SQLite file, or PostgreSQL schema)."""

from __future__ import annotations

from typing import Protocol

from services.common.backend import Ledger, SqliteBacked, open_sqlite
from services.common.journal import Answer
from services.common.paging import LedgerPage, PageRequest
from services.payment import ledger, pg
from services.payment.ledger import Payment
from services.settings import ServiceSettings

__all__ = ["PaymentLedger", "SqlitePayment", "open_ledger"]


class PaymentLedger(Ledger, Protocol):
    async def charge(
        self, order_id: str, epoch: int, amount_cents: int, customer_id: str = ""
    ) -> Answer: ...

    async def refund(self, order_id: str, epoch: int) -> Answer: ...

    async def payment(self, order_id: str) -> Payment: ...

    async def list_payments(self, page: PageRequest) -> LedgerPage[Payment]: ...


class SqlitePayment(SqliteBacked):
    async def charge(
        self, order_id: str, epoch: int, amount_cents: int, customer_id: str = ""
    ) -> Answer:
        return await self.store.write(
            lambda conn: ledger.charge(conn, order_id, epoch, amount_cents, customer_id)
        )

    async def refund(self, order_id: str, epoch: int) -> Answer:
        return await self.store.write(lambda conn: ledger.refund(conn, order_id, epoch))

    async def payment(self, order_id: str) -> Payment:
        return await self.store.read(lambda conn: ledger.payment(conn, order_id))

    async def list_payments(self, page: PageRequest) -> LedgerPage[Payment]:
        return await self.store.read(lambda conn: ledger.list_payments(conn, page))


async def open_ledger(settings: ServiceSettings) -> PaymentLedger:
    if settings.database is not None:
        return pg.PgPayment(pg.open_store(settings.database))
    return SqlitePayment(await open_sqlite(settings.db, ledger.MIGRATIONS, settings.name))
