"""engine/pg's transaction helper against a real server: transient errors before COMMIT
are retried and applied once, a fence failure is not retried, a COMMIT cut off is an
unknown outcome, and a server that cannot be reached is a StorageError."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.errors import CommitOutcomeUnknown, StaleEpoch, StorageError, StorageFault
from engine.pg import Retry, open_pool, statement, transaction
from engine.pg.errors import commit_outcome, is_transient
from engine.pg.pool import Conn
from engine.pg.settings import parse_url
from saga.probes import free_port

WHERE = "test-db"


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(parse_url(pg_url, "TEST_URL"), min_size=1, max_size=4)
    await pool.execute("CREATE TABLE t (n integer NOT NULL)")
    try:
        yield pool
    finally:
        await pool.close()


async def _rows(pool: asyncpg.Pool) -> list[int]:
    return [r["n"] for r in await pool.fetch("SELECT n FROM t ORDER BY n")]


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "57P03"])
async def test_transient_server_error_is_retried_and_applied_once(
    pool: asyncpg.Pool, sqlstate: str
) -> None:
    attempts = 0

    async def unit(conn: Conn) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t VALUES ($1)", attempts)
        if attempts < 3:  # a real error from the server, with that SQLSTATE
            await conn.execute(
                f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"
            )
        return attempts

    assert await transaction(pool, unit, where=WHERE) == 3
    assert await _rows(pool) == [3]  # the failed attempts were rolled back


async def test_connection_killed_before_commit_is_retried(pool: asyncpg.Pool) -> None:
    attempts = 0

    async def unit(conn: Conn) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t VALUES ($1)", attempts)
        if attempts == 1:  # the server ends this very session (57P01 admin_shutdown)
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    await transaction(pool, unit, where=WHERE)
    assert attempts == 2
    assert await _rows(pool) == [2]


async def test_fence_failure_is_never_retried(pool: asyncpg.Pool) -> None:
    attempts = 0

    async def unit(conn: Conn) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t VALUES (1)")
        raise StaleEpoch("another owner claimed it", saga_id="s1")

    with pytest.raises(StaleEpoch):
        await transaction(pool, unit, where=WHERE)
    assert attempts == 1
    assert await _rows(pool) == []


async def test_sql_error_is_raised_as_is(pool: asyncpg.Pool) -> None:
    async def unit(conn: Conn) -> None:
        await conn.execute("INSERT INTO t VALUES (NULL)")

    with pytest.raises(asyncpg.NotNullViolationError):
        await transaction(pool, unit, where=WHERE)


async def test_serialization_failure_at_commit_is_retried(pool: asyncpg.Pool) -> None:
    """A deferred trigger fails at COMMIT with 40001: the server answered, so nothing was
    applied and the unit is run again."""
    await pool.execute(
        """
        CREATE TABLE fail_once (armed boolean NOT NULL);
        INSERT INTO fail_once VALUES (true);
        CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF (SELECT armed FROM fail_once) THEN
            RAISE EXCEPTION 'at commit' USING ERRCODE = '40001';
          END IF;
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER t_commit AFTER INSERT ON t
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit();
        """
    )
    attempts = 0

    async def unit(conn: Conn) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            await conn.execute("UPDATE fail_once SET armed = false")
        await conn.execute("INSERT INTO t VALUES ($1)", attempts)

    await transaction(pool, unit, where=WHERE)
    assert attempts == 2
    assert await _rows(pool) == [2]


async def test_connection_lost_during_commit_is_an_unknown_outcome(pool: asyncpg.Pool) -> None:
    """A deferred trigger ends the session while COMMIT runs: the client never hears the
    answer, so it must not say "nothing happened", and must not run the unit again."""
    await pool.execute(
        """
        CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_terminate_backend(pg_backend_pid());
          PERFORM pg_sleep(5);
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER t_die AFTER INSERT ON t
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit();
        """
    )
    attempts = 0

    async def unit(conn: Conn) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(CommitOutcomeUnknown) as caught:
        await transaction(pool, unit, where=WHERE)
    assert attempts == 1
    assert not isinstance(caught.value, StorageError)
    assert WHERE in caught.value.message


async def test_a_lone_statement_cut_off_is_an_unknown_outcome(pool: asyncpg.Pool) -> None:
    """`statement` sends no COMMIT: the statement commits by itself, so a session that ends
    while it runs may have committed it. Here it did not (the session ends inside the
    statement, before its commit), which the caller cannot tell: it heard "unknown", not
    "nothing happened", and nothing was run again. (A commit that lands and whose answer
    is lost: tests/services/test_pg_unknown_outcome.py, through a proxy.)"""
    await pool.execute(
        """
        CREATE FUNCTION die_after() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_terminate_backend(pg_backend_pid());
          RETURN NULL;
        END $$;
        CREATE TRIGGER t_die AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION die_after();
        """
    )
    attempts = 0

    async def unit(conn: Conn) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("INSERT INTO t VALUES (7)")

    with pytest.raises(CommitOutcomeUnknown):
        await statement(pool, unit, where=WHERE)
    assert attempts == 1
    assert await _rows(pool) == []  # the session ended before the statement committed


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_a_lone_statement_the_server_refused_is_retried_once_applied(
    pool: asyncpg.Pool, sqlstate: str
) -> None:
    attempts = 0

    async def unit(conn: Conn) -> int:
        nonlocal attempts
        attempts += 1
        # One statement: an insert whose failure (a real error from the server) undoes it.
        fail = "true" if attempts < 3 else "false"
        await conn.execute(
            f"""
            WITH ins AS (INSERT INTO t VALUES ({attempts}) RETURNING n)
            SELECT CASE WHEN {fail} THEN raise_in('{sqlstate}') END FROM ins
            """
        )
        return attempts

    await pool.execute(
        """
        CREATE FUNCTION raise_in(state text) RETURNS int LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = state; END $$
        """
    )
    assert await statement(pool, unit, where=WHERE) == 3
    assert await _rows(pool) == [3]  # the refused attempts left nothing


async def test_unreachable_server_is_storage_error() -> None:
    cfg = parse_url(f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db", "SAGA_DATABASE_URL")
    with pytest.raises(StorageError) as caught:
        await open_pool(cfg, min_size=1, max_size=1)
    assert caught.value.fault is StorageFault.UNAVAILABLE
    assert "hunter2" not in caught.value.message
    # A pool that opened lazily meets the same error on its first transaction, after its
    # retry budget.
    lazy = await open_pool(cfg, min_size=0, max_size=1)
    try:

        async def unit(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        with pytest.raises(StorageError) as caught:
            await transaction(lazy, unit, where=cfg.redacted, retry=Retry(attempts=2))
        assert caught.value.fault is StorageFault.UNAVAILABLE
        assert "hunter2" not in caught.value.message
    finally:
        await lazy.close()


def test_classification() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert is_transient(asyncpg.exceptions.SerializationError("x"))
    assert is_transient(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_transient(asyncpg.exceptions.InternalClientError("another operation"))
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("x"))
    assert not is_transient(StaleEpoch("x"))
    assert commit_outcome(ConnectionResetError(), WHERE) is not None
    assert commit_outcome(asyncpg.exceptions.SerializationError("x"), WHERE) is None
