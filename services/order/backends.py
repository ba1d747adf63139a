"""The order ledger's port, its SQLite adapter, and the one function that opens the ledger
a service's settings name (SQLite file, or PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.common.backend import Ledger, SqliteBacked, open_sqlite
from services.common.paging import LedgerPage, PageRequest
from services.order import ledger, pg
from services.order.ledger import LedgerOrder, LedgerStatus, OrderLine
from services.settings import ServiceSettings

__all__ = ["OrderLedger", "SqliteOrders", "open_ledger"]


class OrderLedger(Ledger, Protocol):
    async def create(
        self, order_id: str, epoch: int, customer_id: str, lines: Sequence[OrderLine]
    ) -> LedgerOrder: ...

    async def update_status(
        self, order_id: str, epoch: int, status: LedgerStatus, reason: str = ""
    ) -> bool: ...

    async def get(self, order_id: str) -> LedgerOrder | None: ...

    async def list_orders(self, page: PageRequest) -> LedgerPage[LedgerOrder]: ...


class SqliteOrders(SqliteBacked):
    async def create(
        self, order_id: str, epoch: int, customer_id: str, lines: Sequence[OrderLine]
    ) -> LedgerOrder:
        return await self.store.write(
            lambda conn: ledger.create(conn, order_id, epoch, customer_id, lines)
        )

    async def update_status(
        self, order_id: str, epoch: int, status: LedgerStatus, reason: str = ""
    ) -> bool:
        return await self.store.write(
            lambda conn: ledger.update_status(conn, order_id, epoch, status, reason)
        )

    async def get(self, order_id: str) -> LedgerOrder | None:
        return await self.store.read(lambda conn: ledger.get(conn, order_id))

    async def list_orders(self, page: PageRequest) -> LedgerPage[LedgerOrder]:
        return await self.store.read(lambda conn: ledger.list_orders(conn, page))


async def open_ledger(settings: ServiceSettings) -> OrderLedger:
    if settings.database is not None:
        return pg.PgOrders(pg.open_store(settings.database))
    return SqliteOrders(await open_sqlite(settings.db, ledger.MIGRATIONS, settings.name))
