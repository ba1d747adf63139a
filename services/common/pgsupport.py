"""What the PostgreSQL ledgers need from the driver: the classification of its errors, the
URL without its password, and the numbered migrations of a schema.

A stand-in until the shared engine/pg package (settings, pool, migrations, errors) is on
main; then this module shrinks to calls into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from engine.errors import MigrationError, StorageError, StorageFault
from services.common.errors import LedgerOpenError

__all__ = ["Conn", "is_retryable", "is_unreachable", "migrate_schema", "redact", "storage_error"]

# A connection as a unit gets it: from a pool, or on its own.
Conn = asyncpg.Connection | PoolConnectionProxy

# SQLSTATEs that only a new attempt of the whole transaction cures.
_RETRY: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# The server is there but will not take us as configured: waiting will not help.
_REFUSED: Final = frozenset({"28000", "28P01", "3D000"})  # auth, password, no such database


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(a malformed URL)"


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRY


def is_unreachable(exc: BaseException) -> bool:
    """The connection is gone or cannot be made: the server may come back."""
    if isinstance(exc, asyncpg.PostgresError):
        # 08: connection exception, 53: insufficient resources, 57: shutdown/starting
        return str(exc.sqlstate)[:2] in ("08", "53", "57")
    return isinstance(
        exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | ConnectionError
    )


def storage_error(exc: BaseException, where: str) -> StorageError | LedgerOpenError | None:
    """A driver error as the services' errors; None for anything else (a bug, or a rule
    of the ledger raised on purpose), which the caller lets through."""
    if isinstance(exc, StorageError | LedgerOpenError | MigrationError):
        return exc if not isinstance(exc, MigrationError) else LedgerOpenError(exc.message)
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _REFUSED:
        return LedgerOpenError(f"{where}: the database refuses this service: {_first_line(exc)}")
    if is_unreachable(exc):
        detail = _first_line(exc) or type(exc).__name__
        return StorageError(StorageFault.IO, f"{where}: the database is unreachable: {detail}")
    if is_retryable(exc):
        return StorageError(StorageFault.BUSY, f"{where}: too much contention, retry")
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


async def migrate_schema(conn: Conn, schema: str, migrations: Sequence[str]) -> int:
    """Bring `schema` to len(migrations); replicas starting together take turns on an
    advisory lock, so each migration runs once. Refuses a schema newer than this program."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_version (version INTEGER NOT NULL)"
        )
        current = await conn.fetchval(f"SELECT max(version) FROM {schema}.schema_version")
        version = int(current or 0)
        if version > len(migrations):
            raise MigrationError(
                f"schema {schema} is at version {version}, newer than this program "
                f"({len(migrations)}): upgrade the program"
            )
        for number, sql in enumerate(migrations[version:], start=version + 1):
            await conn.execute(sql)
            await conn.execute(f"INSERT INTO {schema}.schema_version VALUES ({number})")
        return len(migrations)
