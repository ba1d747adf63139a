"""What every service's ledger is to the server, whichever database holds it: where it is
(for the start-up line; never with a password), whether it can be used now (the health
service), how a write whose outcome turned unknown ends, and how it closes.

Each service names its own ledger port (a Protocol of its calls) extending `Ledger`, with
two adapters: one over its SQLite file (`SqliteBacked`), one over its PostgreSQL schema
(`PgBacked`). The rules are the same pure decisions in both; only storage differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.errors import CommitOutcomeUnknown
from engine.sqlite import DbConfig
from services.common.pgstore import PgLedgerStore
from services.common.store import LedgerStore

__all__ = ["Ledger", "PgBacked", "SqliteBacked", "open_sqlite"]


class Ledger(Protocol):
    @property
    def where(self) -> str: ...

    async def ready(self) -> None:
        """Raise StorageError while the ledger cannot be used (the caller retries)."""

    async def check(self) -> bool:
        """Whether the ledger can be used now (NOT_SERVING when not)."""

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        """`listener` hears it when the ledger takes no more writes after an unknown
        COMMIT outcome (SQLite's writer); never for a ledger that can go on."""

    async def close(self) -> None: ...


class SqliteBacked:
    """The part of a SQLite ledger adapter that every service shares."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    @property
    def where(self) -> str:
        return str(self.store.cfg.path)

    async def ready(self) -> None:
        return None  # a local file: opened (or refused) at start

    async def check(self) -> bool:
        return True

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        self.store.on_poisoned(listener)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)


class PgBacked:
    """The part of a PostgreSQL ledger adapter that every service shares."""

    def __init__(self, store: PgLedgerStore) -> None:
        self.store = store
        self.schema = store.schema

    @property
    def where(self) -> str:
        return self.store.where

    async def ready(self) -> None:
        await self.store.ready()

    async def check(self) -> bool:
        return await self.store.check()

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        return None  # an unknown COMMIT outcome leaves the store usable: never poisoned

    async def close(self) -> None:
        await self.store.close()


async def open_sqlite(path_cfg: DbConfig, migrations: Sequence[str], name: str) -> LedgerStore:
    """Open (create, migrate) a service's ledger file off the event loop."""
    return await asyncio.to_thread(LedgerStore, path_cfg, migrations, name=f"{name}-ledger")
