"""Numbered migrations on PostgreSQL: applied once even when several processes start at
the same moment; a schema newer than the code is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from engine.errors import SchemaTooNew
from engine.pg import migrate, open_pool, schema_version
from engine.pg.settings import parse_url

# Not idempotent on purpose: a second run of any of them fails (CREATE TABLE) or leaves a
# second row behind (INSERT), so "applied once" is what the tables say.
MIGRATIONS = (
    "CREATE TABLE a (id integer PRIMARY KEY); CREATE TABLE ran (n integer NOT NULL);"
    " INSERT INTO ran VALUES (1)",
    # Slow, so that racers would overlap in it if nothing serialized them.
    "SELECT pg_sleep(0.3); ALTER TABLE a ADD COLUMN b text; INSERT INTO ran VALUES (2)",
    "CREATE TABLE c (id integer); INSERT INTO ran VALUES (3)",
)

_RACER = """
import asyncio, sys, time
from engine.pg import migrate, open_pool
from engine.pg.settings import parse_url
from tests.pg.test_migrate import MIGRATIONS

async def main() -> None:
    pool = await open_pool(parse_url(sys.argv[1], "URL"), min_size=1, max_size=1)
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
    print(await migrate(pool, schema="racing", migrations=MIGRATIONS))
    await pool.close()

asyncio.run(main())
"""


def test_processes_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    async def first() -> None:
        # The schema exists at version 1: the racers then meet in the migrations only.
        pool = await open_pool(parse_url(pg_url, "URL"), min_size=1, max_size=1)
        try:
            await migrate(pool, schema="racing", migrations=MIGRATIONS[:1])
        finally:
            await pool.close()

    asyncio.run(first())
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, pg_url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "3"

    async def check() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            ran = [r["n"] for r in await conn.fetch("SELECT n FROM racing.ran ORDER BY n")]
            versions = await conn.fetch("SELECT version FROM racing.schema_migrations")
        finally:
            await conn.close()
        assert ran == [1, 2, 3]
        assert sorted(r["version"] for r in versions) == [1, 2, 3]

    asyncio.run(check())


async def test_later_migrations_apply_on_top_and_newer_schema_is_refused(pg_url: str) -> None:
    pool = await open_pool(parse_url(pg_url, "URL"), min_size=1, max_size=2)
    try:
        assert await migrate(pool, schema="mine", migrations=MIGRATIONS[:1]) == 1
        assert await migrate(pool, schema="mine", migrations=MIGRATIONS) == 3
        assert await migrate(pool, schema="mine", migrations=MIGRATIONS) == 3
        async with pool.acquire() as conn:
            assert await schema_version(conn, "mine") == 3
            assert await schema_version(conn, "never") == 0
            assert await conn.fetchval("SELECT count(*) FROM mine.ran") == 3
        with pytest.raises(SchemaTooNew) as caught:
            await migrate(pool, schema="mine", migrations=MIGRATIONS[:2], where="db-x")
        assert caught.value.version == 3
        assert caught.value.known == 2
        assert "newer than this program knows" in caught.value.message
        # Another schema in the same database moves on its own.
        assert await migrate(pool, schema="other", migrations=MIGRATIONS[:2]) == 2
    finally:
        await pool.close()


async def test_failed_migration_leaves_nothing(pg_url: str) -> None:
    pool = await open_pool(parse_url(pg_url, "URL"), min_size=1, max_size=1)
    try:
        broken = (*MIGRATIONS[:1], "ALTER TABLE nowhere ADD COLUMN x integer")
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(pool, schema="half", migrations=broken)
        async with pool.acquire() as conn:
            assert await schema_version(conn, "half") == 0
            assert await conn.fetchval("SELECT to_regclass('half.a')") is None
    finally:
        await pool.close()
