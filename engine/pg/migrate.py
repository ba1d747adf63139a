"""Numbered migrations of one schema, applied once however many processes start at once.

Each user of the database (the saga log, each service's ledger) keeps its tables in a
schema of its own, with a `schema_migrations` table in it: one row per migration applied.
Applying runs in one transaction that first takes a transaction-scoped advisory lock keyed
by the schema's name, so a second process starting at the same moment waits, then finds
the migrations applied and does nothing. PostgreSQL's DDL is transactional: a migration
that fails leaves nothing half-done. The advisory lock is the only one the design uses
(docs/scale-out.md, CockroachDB).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from engine.errors import SchemaTooNew
from engine.pg.pool import Conn
from engine.pg.tx import transaction

__all__ = ["lock_key", "migrate", "schema_version"]


def lock_key(schema: str) -> int:
    """The advisory lock's key for `schema`: the same in every process, signed 64-bit."""
    digest = hashlib.sha256(f"migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ident(schema: str) -> str:
    if not schema.isidentifier() or schema.lower() != schema:
        raise ValueError(f"schema name {schema!r}: expected a lower-case identifier")
    return f'"{schema}"'


async def migrate(
    target: asyncpg.Pool | Conn,
    *,
    schema: str,
    migrations: Sequence[str],
    where: str = "the database",
) -> int:
    """Apply `migrations[i]` (as version i + 1) to `schema` unless already applied; return
    the schema's version. Migrations run with `search_path` set to the schema, so they
    name their tables unqualified. A schema whose version is newer than
    `len(migrations)` raises SchemaTooNew (a later program migrated it)."""
    name = _ident(schema)

    async def unit(conn: Conn) -> int:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name}.schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await _version(conn, name)
        if version > len(migrations):
            raise SchemaTooNew(
                f"{where}: schema {schema!r} is at version {version}, newer than this "
                f"program knows ({len(migrations)}); upgrade the program",
                version=version,
                known=len(migrations),
            )
        await conn.execute(f"SET LOCAL search_path TO {name}")
        for number, sql in enumerate(migrations[version:], start=version + 1):
            await conn.execute(sql)
            await conn.execute(
                f"INSERT INTO {name}.schema_migrations (version) VALUES ($1)", number
            )
        return max(version, len(migrations))

    if isinstance(target, asyncpg.Pool):
        return await transaction(target, unit, where=where)
    async with target.transaction():
        return await unit(target)


async def schema_version(conn: Conn, schema: str) -> int:
    """The version `schema` is at; 0 when it has never been migrated."""
    name = _ident(schema)
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{name}.schema_migrations")
    return await _version(conn, name) if exists else 0


async def _version(conn: Conn, name: str) -> int:
    value = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {name}.schema_migrations")
    return int(value)
