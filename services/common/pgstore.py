"""A service's ledger in PostgreSQL: one schema of a database shared by every replica.

The store owns the service's connection pool (engine/pg). It connects lazily: a service
started while the database is down serves at once, answers every call UNAVAILABLE (a
StorageError), and becomes ready by itself when the database returns (`ready`, polled by
the server's health watcher and tried again by every call). Ready means: the schema is
migrated (numbered, serialized between replicas that start together) and the service's
`prepare` unit (the inventory's seed) has run, in one transaction, once per new ledger.

Each write is one READ COMMITTED transaction (engine.pg.transaction: transient errors
before COMMIT are retried briefly, then a StorageError: nothing was applied). The ledgers
take the row locks they need (the order's fence row first, then products in product-id
order), so replicas serialize per order and per product and never deadlock on each other.
A connection lost DURING COMMIT is CommitOutcomeUnknown: the call may be durable, and the
answer never says otherwise. Unlike SQLite's writer the store is not poisoned by it (the
next transaction reads the truth from the server), and the caller's retry is safe: the
journal answers a repeated call once. Each read is one REPEATABLE READ snapshot, so a
query of two tables (GetStock) sees one state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import asyncpg

from engine.errors import StorageError, StorageFault, unreachable
from engine.pg import Outage, PgConfig, migrate, open_pool, storage_error, transaction
from engine.pg.pool import Conn

__all__ = ["PgLedgerStore", "Unit"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Conn], Awaitable[T]]

POOL_SIZE: Final = 10  # connections per replica; a call holds one for its transaction


class PgLedgerStore:
    def __init__(
        self,
        cfg: PgConfig,
        *,
        schema: str,
        migrations: Sequence[str],
        prepare: Callable[[Conn], Awaitable[object]] | None = None,
        max_size: int = POOL_SIZE,
    ) -> None:
        self.cfg = cfg
        self.schema = schema
        self.where = f"{cfg.redacted} schema {schema}"
        self._migrations = tuple(migrations)
        self._prepare = prepare
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._ready = False
        self._lock = asyncio.Lock()
        self._closed = False
        self._outage = Outage(self.where, what="ledger")  # told once: engine/pg/outage.py

    async def ready(self) -> None:
        """Connect, migrate and prepare once. StorageError while the database cannot be
        used (fault CANTOPEN: it refuses this service, e.g. a wrong password), SchemaTooNew
        for a ledger migrated by a later program."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            try:
                await self._prepare_once()
            except StorageError as exc:
                if unreachable(exc):
                    self._outage.failed(exc.message)
                raise
            self._ready = True

    async def _prepare_once(self) -> None:
        """Connect, migrate, prepare: what `ready` does once."""
        if self._closed:
            raise StorageError(StorageFault.IO, f"{self.where}: the ledger is closed")
        if self._pool is None:
            # min_size=0: opening connects nothing, so it cannot fail on an absent
            # server; each call's acquire connects as needed.
            self._pool = await open_pool(
                self.cfg,
                min_size=0,
                max_size=self._max_size,
                application_name=f"saga-{self.schema}",
            )
        await migrate(self._pool, schema=self.schema, migrations=self._migrations, where=self.where)
        if self._prepare is not None:
            await transaction(self._pool, self._prepare, where=self.where)

    async def check(self) -> bool:
        """Whether a call would reach the database now (for the health service)."""
        try:
            pool = await self._pool_ready()
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            log.debug("%s: health check failed: %s", self.where, exc)
            failed = exc if isinstance(exc, StorageError) else storage_error(exc, self.where)
            if failed is not None and unreachable(failed):
                self._outage.failed(failed.message)
            return False
        self._outage.answered()
        return True

    async def write(self, unit: Unit[T]) -> T:
        """Run `unit` in one transaction, retried while a new attempt may help."""
        pool = await self._pool_ready()
        return await transaction(pool, unit, where=self.where, outage=self._outage)

    async def read(self, query: Unit[T]) -> T:
        """Run `query` on one snapshot: a read-only REPEATABLE READ transaction."""

        async def snapshot(conn: Conn) -> T:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return await query(conn)

        pool = await self._pool_ready()
        return await transaction(pool, snapshot, where=self.where, outage=self._outage)

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()

    async def _pool_ready(self) -> asyncpg.Pool:
        await self.ready()
        assert self._pool is not None
        return self._pool
