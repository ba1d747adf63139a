"""Connection pools: every PostgreSQL user in the repo opens its pool here, with the same
timeouts and session settings."""

from __future__ import annotations

from typing import Final, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from engine.pg.errors import storage_error
from engine.pg.outage import quiet_pool_reconnects
from engine.pg.settings import PgConfig

__all__ = ["CONNECT_TIMEOUT_S", "Conn", "open_pool"]

# What a unit of work is given: a pool's connection, or a connection of its own.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

CONNECT_TIMEOUT_S: Final = 5.0  # a server that does not answer a connect in 5 s is down
COMMAND_TIMEOUT_S: Final = 30.0  # no statement of ours runs long; one that does is stuck
# A session left idle inside a transaction holds its row locks (a claim's FOR UPDATE) and
# stalls every other claimer; the server ends such a session instead (a DBOS failure).
IDLE_IN_TRANSACTION_MS: Final = 30_000


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool: nothing but a rollback
    of a transaction left open (a bug), instead of asyncpg's reset query (`RESET ALL`,
    `UNLISTEN *`, …), a round trip on every use for state no user here leaves behind."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_pool(
    cfg: PgConfig,
    *,
    min_size: int,
    max_size: int,
    application_name: str = "saga",
    search_path: str | None = None,
) -> asyncpg.Pool:
    """A pool on `cfg`'s database; a server that cannot be reached is a StorageError.

    Statements are prepared and cached per connection (asyncpg's default: the least client
    CPU per write). When another process's migration changes a table under a cached
    statement, the statement fails with InvalidCachedStatementError, which is transient
    (engine/pg/errors.py): the transaction is run again and re-prepares it. A pooler in
    transaction mode (PgBouncer) needs its own prepared-statement support to be enabled.
    `search_path` names the one schema a user's statements work in (its own).

    A connection goes back to the pool as its user left it (no reset query: one round
    trip less per use), so users leave no session state behind: `SET LOCAL` inside a
    transaction, never `SET`; transaction-scoped advisory locks; no LISTEN."""
    settings = {
        "application_name": application_name,
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
    }
    if search_path is not None:
        settings["search_path"] = search_path
    quiet_pool_reconnects()  # the pool's owner tells an outage once (engine/pg/outage.py)
    try:
        pool = await asyncpg.create_pool(
            cfg.dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=settings,
            reset=_keep_session,
        )
    except Exception as exc:
        err = storage_error(exc, cfg.redacted)
        if err is None:
            raise
        raise err from None
    return pool
