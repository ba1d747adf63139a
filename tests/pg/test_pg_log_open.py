"""Opening the PostgreSQL saga log from every entry point: a newer schema is refused, a
database with no log is not given one by an operator command, a server that cannot be
reached is one clear line; none shows the password."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.clock import SystemClock
from engine.core import Phase, SagaStatus, Transition
from engine.errors import SchemaTooNew
from engine.pg import migrate, open_pool
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.pg_log_schema import MIGRATIONS
from engine.saga_log import NewSaga, SagaRecord
from orders.model import ORDER_SAGA
from saga.children import base_env
from saga.probes import free_port
from tests.ops.helpers import assert_error_line, run_saga
from tests.support.stack import order


async def _open_close(url: str) -> None:
    log = await PgSagaLog.open(parse_url(url, "SAGA_DATABASE_URL"))
    await log.close()


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_a_newer_schema_is_refused_everywhere(pg_url: str) -> None:
    asyncio.run(_open_close(pg_url))
    newer = len(MIGRATIONS) + 1
    asyncio.run(_execute(pg_url, f"INSERT INTO saga_log.schema_migrations VALUES ({newer})"))
    with pytest.raises(SchemaTooNew):
        asyncio.run(_open_close(pg_url))
    env = base_env(SAGA_DATABASE_URL=pg_url)
    for command in (["ls"], ["gateway"]):
        ran = run_saga(*command, env=env)
        assert_error_line(ran, f"version {newer}", "newer than this program knows")


def test_an_operator_command_does_not_make_a_log(pg_url: str) -> None:
    ran = run_saga("ls", env=base_env(SAGA_DATABASE_URL=pg_url))
    assert_error_line(ran, "no saga log in this database yet")

    async def schemas() -> set[str]:
        conn = await asyncpg.connect(pg_url)
        try:
            return {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
        finally:
            await conn.close()

    assert "saga_log" not in asyncio.run(schemas())


def test_a_server_that_cannot_be_reached_is_one_line() -> None:
    """For an operator's command; the gateway and the daemon wait for such a server
    instead (tests/pg/test_pg_start_before_database.py)."""
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db"
    for command in (["ls"], ["audit"], ["show", "some-saga"]):
        ran = run_saga(*command, env=base_env(SAGA_DATABASE_URL=url, HTTP_ADDR="127.0.0.1:0"))
        assert_error_line(ran, "postgresql://app:***@127.0.0.1", "cannot be used right now")
        assert "hunter2" not in ran.err + ran.out


async def _seed_for_operators(url: str, now: int) -> None:
    log = await PgSagaLog.open(parse_url(url, "SAGA_DATABASE_URL"))
    payload = order(5_000).to_payload()
    try:
        for sid in ("parked", "running", "done"):
            made = NewSaga(sid, ORDER_SAGA, payload)
            await log.create(made, owner=None, lease_expires_ms=0, now_ms=now - 3_600_000)
        park = [Transition("", Phase.PARKED, 1, "stuck")]
        await log.append(
            "parked", 1, park, status=SagaStatus.NEEDS_ATTENTION, reason="stuck", now_ms=now
        )
        steps = [Transition("", Phase.COMPLETED, 1)]
        await log.append(
            "done", 1, steps, status=SagaStatus.COMPLETED, reason=None, now_ms=now - 3_000_000
        )
    finally:
        await log.close()


async def _read(url: str, sid: str) -> tuple[SagaRecord | None, list[Transition]]:
    log = await PgSagaLog.open(parse_url(url, "SAGA_DATABASE_URL"))
    try:
        return await log.get(sid), await log.transitions(sid)
    finally:
        await log.close()


def test_operator_commands_work_on_the_database(pg_url: str) -> None:
    asyncio.run(_seed_for_operators(pg_url, SystemClock().now_ms()))
    env = base_env(SAGA_DATABASE_URL=pg_url)

    listed = run_saga("ls", env=env)
    assert listed.code == 0, listed
    assert all(sid in listed.out for sid in ("parked", "running", "done"))

    assert run_saga("retry", "parked", env=env).code == 0
    parked, _ = asyncio.run(_read(pg_url, "parked"))
    assert parked is not None
    assert (parked.status, parked.epoch, parked.owner) == (SagaStatus.RUNNING, 2, None)

    assert run_saga("cancel", "running", env=env).code == 0
    running, _ = asyncio.run(_read(pg_url, "running"))
    assert running is not None and running.status is SagaStatus.COMPENSATING

    refused = run_saga("cancel", "done", env=env)
    assert_error_line(refused, "cannot cancel done", code=3)

    assert run_saga("prune", "--older-than", "30m", env=env).code == 0
    done, kept = asyncio.run(_read(pg_url, "done"))
    assert done is not None and done.status is SagaStatus.COMPLETED
    assert [t.phase for t in kept] == [Phase.COMPLETED]


async def _upgrade_from_version_1(url: str) -> list[str]:
    # As the first version's processes ran: in the log's schema (its trigger needs it).
    cfg = parse_url(url, "URL")
    pool = await open_pool(cfg, min_size=1, max_size=1, search_path="saga_log")
    try:
        await migrate(pool, schema="saga_log", migrations=MIGRATIONS[:1])
        await pool.execute(
            "INSERT INTO saga_log.sagas (id, definition, status, payload, payload_digest, "
            "created_ms, updated_ms) VALUES ($1, 'order', 'COMPLETED', $2, 'd', 1, 1)",
            "old",
            b'{"customer_id":"c9"}',
        )
    finally:
        await pool.close()
    log = await PgSagaLog.open(parse_url(url, "URL"))
    try:
        page = await log.list_by_payload_field("customer_id", "c9", limit=5)
    finally:
        await log.close()
    return [r.id for r in page.items]


def test_a_log_of_version_1_is_upgraded_in_place(pg_url: str) -> None:
    assert asyncio.run(_upgrade_from_version_1(pg_url)) == ["old"]
