"""A fresh PostgreSQL database per measurement, for the benchmarks' `--backend postgres`.

The benchmarks never write into a database they did not make: each measurement creates
its own (`saga_bench_<random>`) on the server that `--pg-url` names (default: the local
server on 127.0.0.1:5432, as the current OS user), hands its URL to the log or to the
stack's processes (`SAGA_DATABASE_URL`), and drops it afterwards, connections and all.
The database in `--pg-url` is only where the benchmark connects to do that. A URL's
password never appears in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Final

import asyncpg

from bench.errors import BenchError
from bench.measure import process_cpu_seconds
from bench.report import redact
from engine.pg_log_schema import SCHEMA

__all__ = [
    "DEFAULT_PG_URL",
    "LEDGER_URL_VARS",
    "ServerCpu",
    "count_sagas",
    "fresh_database",
    "ledger_rows",
    "query",
    "redact",
    "with_database",
]

DEFAULT_PG_URL: Final = "postgresql://127.0.0.1:5432/postgres"
_TIMEOUT_S: Final = 10.0
# The services' ledgers on PostgreSQL (docs/reference.md): one database may hold all
# three, each service in its own schema.
LEDGER_URL_VARS: Final = ("ORDER_DATABASE_URL", "PAYMENT_DATABASE_URL", "INVENTORY_DATABASE_URL")
_LEDGER_TABLES: Final = ("order_svc.orders", "payment_svc.payments", "inventory_svc.reservations")


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead of its own."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"{redact(url)}: not a postgresql:// URL")
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def _execute(url: str, sql: str) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise BenchError(f"PostgreSQL at {redact(url)}: {exc}") from exc
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin_url: str = DEFAULT_PG_URL) -> Iterator[str]:
    """Create an empty database on `admin_url`'s server; yield its URL; drop it."""
    with_database(admin_url, "check")  # a bad URL fails before anything is created
    name = f"saga_bench_{secrets.token_hex(6)}"
    asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _count(url: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.sagas"))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0
    finally:
        await conn.close()


def count_sagas(url: str) -> int:
    """Sagas in the saga log of the database at `url` (0 when it has no saga log): proof
    that the processes used the database they were given."""
    return asyncio.run(_count(url))


async def _ledger_rows(url: str) -> dict[str, int]:
    try:
        conn = await asyncpg.connect(url, timeout=_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    rows: dict[str, int] = {}
    try:
        for table in _LEDGER_TABLES:
            try:
                rows[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                rows[table] = 0
    finally:
        await conn.close()
    return rows


def ledger_rows(url: str) -> bool:
    """Whether every service wrote into its schema of the database at `url`: proof that
    the services used the database they were given, not their SQLite files."""
    return all(n > 0 for n in asyncio.run(_ledger_rows(url)).values())


async def _backends(url: str) -> set[int]:
    conn = await asyncpg.connect(url, timeout=_TIMEOUT_S)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {int(r["pid"]) for r in rows}


class ServerCpu:
    """CPU seconds the PostgreSQL server spent for one database between `start` and
    `stop`: its backends (one process per connection to that database, read from
    /proc: the server must run on this machine), so that a stack on PostgreSQL is charged
    for its database as a stack on SQLite is for the writes it makes in-process. Not
    counted: a backend that ended before `stop`, and the server's shared processes (WAL
    writer, checkpointer), which other databases use too."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._c0: dict[int, float] = {}

    def start(self) -> None:
        self._c0 = {p: process_cpu_seconds(p) for p in asyncio.run(_backends(self._url))}

    def stop(self) -> float:
        total = 0.0
        for pid in asyncio.run(_backends(self._url)):
            now = process_cpu_seconds(pid)
            if now == now:  # not nan: still there
                total += now - self._c0.get(pid, 0.0)
        return total


async def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url, timeout=_TIMEOUT_S, server_settings={"search_path": SCHEMA})
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    """The rows of `sql` run in the saga log's schema of the database at `url` (the same
    table names as the SQLite log's)."""
    return asyncio.run(_query(url, sql))
