"""The benchmarks' fresh PostgreSQL databases (bench/pg.py): made on the local server,
used, and dropped; a bad URL or an unreachable server is one clear error, with no
password in it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bench.errors import BenchError
from bench.pg import DEFAULT_PG_URL, count_sagas, fresh_database, redact, with_database
from bench.report import write_outputs
from engine.pg_log_schema import SCHEMA
from saga.probes import free_port


async def _databases() -> set[str]:
    conn = await asyncpg.connect(DEFAULT_PG_URL)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database")
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


async def _make_sagas_table(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        await conn.execute(f"CREATE TABLE {SCHEMA}.sagas (id text PRIMARY KEY)")
        rows_in = [(f"s{i}",) for i in range(rows)]
        await conn.executemany(f"INSERT INTO {SCHEMA}.sagas VALUES ($1)", rows_in)
    finally:
        await conn.close()


def test_a_fresh_database_is_empty_usable_and_dropped_after() -> None:
    with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("saga_bench_")
        assert name in asyncio.run(_databases())
        assert count_sagas(url) == 0  # no saga log in it yet
        asyncio.run(_make_sagas_table(url, 3))
        assert count_sagas(url) == 3
    assert name not in asyncio.run(_databases())


def test_no_password_is_ever_shown() -> None:
    url = "postgresql://bench:s3cret@127.0.0.1:1/postgres"
    assert redact(url) == "postgresql://bench:***@127.0.0.1:1/postgres"
    assert redact("postgres://127.0.0.1/db") == "postgres://127.0.0.1/db"
    unreachable = f"postgresql://bench:s3cret@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(BenchError) as info, fresh_database(unreachable):
        pass
    assert "cannot connect to PostgreSQL" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_url_that_is_not_postgresql_is_refused_before_anything_is_made() -> None:
    with pytest.raises(BenchError, match="not a postgresql:// URL"):
        with_database("mysql://u:pw@h/db", "x")
    assert "pw" not in redact("mysql://u:pw@h/db")


def test_a_password_in_a_url_setting_is_never_written_to_the_report(tmp_path: Path) -> None:
    url = "postgresql://bench:s3cret@127.0.0.1:5432/postgres"
    files = write_outputs(
        tmp_path, "x", "# x\n", settings={"pg_url": url}, machine={}, runs=[], data_dir=tmp_path
    )
    written = "".join(f.read_text(encoding="utf-8") for f in files)
    assert "s3cret" not in written
    assert "postgresql://bench:***@127.0.0.1:5432/postgres" in written
