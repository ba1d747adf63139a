"""The inventory ledger's port, its SQLite adapter, and the one function that opens the
ledger a service's settings name (SQLite file, or PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.common.backend import Ledger, SqliteBacked, open_sqlite
from services.common.journal import Answer
from services.common.paging import LedgerPage, PageRequest
from services.inventory import ledger, pg
from services.inventory.ledger import Reservation, StockLine, StockView
from services.settings import ServiceSettings

__all__ = ["InventoryLedger", "SqliteInventory", "open_ledger"]


class InventoryLedger(Ledger, Protocol):
    async def reserve(self, order_id: str, epoch: int, lines: Sequence[StockLine]) -> Answer: ...

    async def release(self, order_id: str, epoch: int) -> Answer: ...

    async def reservation(self, order_id: str) -> Reservation: ...

    async def list_reservations(self, page: PageRequest) -> LedgerPage[Reservation]: ...

    async def stock(self, product_ids: Sequence[str] = ()) -> StockView: ...


class SqliteInventory(SqliteBacked):
    async def reserve(self, order_id: str, epoch: int, lines: Sequence[StockLine]) -> Answer:
        return await self.store.write(lambda conn: ledger.reserve(conn, order_id, epoch, lines))

    async def release(self, order_id: str, epoch: int) -> Answer:
        return await self.store.write(lambda conn: ledger.release(conn, order_id, epoch))

    async def reservation(self, order_id: str) -> Reservation:
        return await self.store.read(lambda conn: ledger.reservation(conn, order_id))

    async def list_reservations(self, page: PageRequest) -> LedgerPage[Reservation]:
        return await self.store.read(lambda conn: ledger.list_reservations(conn, page))

    async def stock(self, product_ids: Sequence[str] = ()) -> StockView:
        return await self.store.read(lambda conn: ledger.stock(conn, product_ids))


async def open_ledger(settings: ServiceSettings) -> InventoryLedger:
    """The ledger the settings name; a new one gets the seed stock once."""
    if settings.database is not None:
        return pg.PgInventory(pg.open_store(settings.database, settings.seed_stock))
    store = await open_sqlite(settings.db, ledger.MIGRATIONS, settings.name)
    try:
        await store.write(lambda conn: ledger.seed(conn, settings.seed_stock))
    except BaseException:
        store.close()
        raise
    return SqliteInventory(store)
