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

__all__ = ["DEFAULT_PG_URL", "count_sagas", "fresh_database", "redact", "with_database"]

DEFAULT_PG_URL: Final = "postgresql://127.0.0.1:5432/postgres"
_TIMEOUT_S: Final = 10.0


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
        return int(await conn.fetchval("SELECT count(*) FROM sagas"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def count_sagas(url: str) -> int:
    """Sagas in the saga log of the database at `url` (0 when it has no saga log): proof
    that the processes used the database they were given."""
    return asyncio.run(_count(url))
