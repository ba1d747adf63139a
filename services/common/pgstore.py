"""A service's ledger in PostgreSQL: one schema of a database shared by every replica.

The store owns the service's connection pool. It connects lazily: a service started while
the database is down serves at once, answers every call UNAVAILABLE (a StorageError), and
becomes ready by itself when the database returns (`ready`, polled by the server's health
watcher and tried again by every call). Ready means: the schema is migrated (numbered,
serialized between replicas that start together) and the service's `prepare` unit (e.g.
the inventory's seed) has run in one transaction.

Each write is one READ COMMITTED transaction; the ledgers take the row locks they need
(the order's fence row first, then products in product-id order), so replicas serialize
per order and per product and never deadlock on each other. A serialization failure or a
deadlock is retried here, from the start of the unit. A connection lost before COMMIT is a
StorageError: nothing was applied. A connection lost DURING COMMIT is CommitOutcomeUnknown:
the call may be durable, and the answer never says otherwise. Unlike SQLite's writer the
store is not poisoned by it (the next transaction reads the truth from the server), and
the caller's retry is safe: the journal answers a repeated call once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import asyncpg

from engine.errors import CommitOutcomeUnknown, StorageError, StorageFault
from services.common.errors import LedgerOpenError
from services.common.pgsupport import (
    Conn,
    is_retryable,
    is_unreachable,
    migrate_schema,
    redact,
    storage_error,
)

__all__ = ["PgLedgerStore", "Unit"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Conn], Awaitable[T]]

RETRIES: Final = 5  # serialization failures and deadlocks: tried again this often


class PgLedgerStore:
    def __init__(
        self,
        url: str,
        *,
        schema: str,
        migrations: Sequence[str],
        prepare: Callable[[Conn], Awaitable[object]] | None = None,
        max_size: int = 10,
    ) -> None:
        self.url = url
        self.schema = schema
        self.where = f"{redact(url)} schema {schema}"
        self._migrations = tuple(migrations)
        self._prepare = prepare
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._ready = False
        self._lock = asyncio.Lock()
        self._closed = False

    async def ready(self) -> None:
        """Connect, migrate and prepare once; StorageError while the database is away,
        LedgerOpenError for what waiting cannot fix (bad password, newer schema)."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            if self._closed:
                raise StorageError(StorageFault.IO, f"{self.where}: the ledger is closed")
            if self._pool is None:
                # min_size=0: creating the pool connects nothing, so it cannot fail on an
                # absent server; the first acquire connects.
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=self._max_size
                )
            try:
                async with self._pool.acquire() as conn:
                    await migrate_schema(conn, self.schema, self._migrations)
                    if self._prepare is not None:
                        async with conn.transaction():
                            await self._prepare(conn)
            except Exception as exc:
                translated = self._translate(exc)
                if translated is None:
                    raise
                raise translated from exc
            self._ready = True

    async def check(self) -> bool:
        """Whether a call would reach the database now (for the health service)."""
        try:
            await self.ready()
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT 1")
        except (StorageError, LedgerOpenError):
            return False
        except Exception as exc:
            log.warning("%s: health check failed: %s", self.where, exc)
            return False
        return True

    async def write(self, unit: Unit[T]) -> T:
        """Run `unit` in one transaction, retried on a serialization failure or deadlock."""
        pool = await self._pool_ready()
        for attempt in range(1, RETRIES + 1):
            try:
                async with pool.acquire() as conn:
                    return await self._transaction(conn, unit)
            except CommitOutcomeUnknown:
                raise
            except Exception as exc:
                if is_retryable(exc) and attempt < RETRIES:
                    continue
                translated = self._translate(exc)
                if translated is None:
                    raise
                raise translated from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    async def read(self, query: Unit[T]) -> T:
        """Run `query` on one snapshot: a read-only REPEATABLE READ transaction."""
        pool = await self._pool_ready()
        try:
            async with (
                pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await query(conn)
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()

    async def _pool_ready(self) -> asyncpg.Pool:
        await self.ready()
        assert self._pool is not None
        return self._pool

    async def _transaction(self, conn: Conn, unit: Unit[T]) -> T:
        tx = conn.transaction()
        await tx.start()
        try:
            result = await unit(conn)
        except BaseException:
            if not conn.is_closed():
                try:
                    await tx.rollback()
                except Exception:
                    conn.terminate()
            raise
        try:
            await tx.commit()
        except Exception as exc:
            if is_unreachable(exc):
                raise CommitOutcomeUnknown(
                    f"{self.where}: the connection was lost during COMMIT ({type(exc).__name__})"
                ) from exc
            raise  # a definite refusal at COMMIT: rolled back, nothing applied
        return result

    def _translate(self, exc: BaseException) -> StorageError | LedgerOpenError | None:
        return storage_error(exc, self.where)
