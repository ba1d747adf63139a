"""What an asyncpg or socket error means for a caller: may it be retried, and what does
the engine call it.

Three answers matter (docs/scale-out.md, Failures):
- transient: the server could not be reached or gave up on this transaction for a reason
  that a new attempt may not meet (connection lost or refused, shutdown, failover,
  serialization failure, deadlock, timeout). Retried with backoff before COMMIT.
- anything else is this program's or the schema's mistake, raised as it is.
- a COMMIT cut off before its answer arrived: the transaction may be durable or not.
  That is `CommitOutcomeUnknown`, never a StorageError, which promises "nothing happened".
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg

from engine.errors import CommitOutcomeUnknown, StorageError, StorageFault

__all__ = ["commit_outcome", "is_connection_loss", "is_transient", "storage_error"]

# SQLSTATEs worth a new attempt. Class 08 (connection exception) is matched by prefix.
_TRANSIENT_STATES: Final = frozenset(
    {
        "40001",  # serialization_failure (also CockroachDB's "restart transaction")
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57P01",  # admin_shutdown: the server is stopping or the backend was terminated
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, or in recovery
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction: connected to a standby mid-failover
    }
)
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})
_FULL_STATES: Final = frozenset({"53100"})  # disk_full


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else ""


def is_connection_loss(exc: BaseException) -> bool:
    """The connection failed or was never made: the server's side of any statement in
    flight is unknown."""
    state = _sqlstate(exc)
    return (
        isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError)
        or state.startswith("08")
        or state in _UNAVAILABLE_STATES
    )


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt of the whole transaction (a fence failure never is: it is an
    EngineError, not a driver error)."""
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError):
        # A migration by another process changed a table this connection had prepared a
        # statement on; asyncpg drops the stale statement, so the next attempt re-prepares.
        return True
    return is_connection_loss(exc) or _sqlstate(exc) in _TRANSIENT_STATES


def storage_error(exc: BaseException, where: str) -> StorageError | None:
    """A driver error translated for the engine (callers answer 503 "unavailable"); None
    for an error of the SQL itself, which is a bug to raise as it is. `where` names the
    database without its password (PgConfig.redacted)."""
    state = _sqlstate(exc)
    if state in _FULL_STATES:
        return StorageError(StorageFault.FULL, f"{where}: the database server's disk is full")
    if is_transient(exc):
        detail = _describe(exc)
        return StorageError(
            StorageFault.UNAVAILABLE,
            f"{where}: the database cannot be used right now ({detail})",
            path=where,
        )
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidCatalogNameError) or (
        state.startswith("28")
    ):
        return StorageError(
            StorageFault.CANTOPEN, f"{where}: cannot log in ({_describe(exc)})", path=where
        )
    return None


def commit_outcome(exc: BaseException, where: str) -> CommitOutcomeUnknown | None:
    """What a COMMIT that raised `exc` left behind. An answer from the server (a
    serialization failure at commit, a deferred constraint) means it rolled back: None,
    the caller treats `exc` as any error before COMMIT. A lost connection, a timeout or a
    shutdown means the COMMIT may have been durable: CommitOutcomeUnknown."""
    if not is_connection_loss(exc):
        return None
    return CommitOutcomeUnknown(
        f"{where}: the connection was lost while a COMMIT was in flight ({_describe(exc)}); "
        "whether it is durable is unknown",
        path=where,
    )


def _describe(exc: BaseException) -> str:
    state = _sqlstate(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{state} {text}" if state else f"{type(exc).__name__}: {text}"
