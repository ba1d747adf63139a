"""One way to run a unit of work in a PostgreSQL transaction, for every user of the
database: retried while a new attempt may help, and honest about a COMMIT whose answer
never came."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from engine.errors import CommitOutcomeUnknown, StorageError, StorageFault
from engine.pg.errors import commit_outcome, is_transient, storage_error
from engine.pg.outage import Outage
from engine.pg.pool import Conn

__all__ = ["RETRY_FOR_S", "Retry", "read", "statement", "transaction"]

T = TypeVar("T")
Unit = Callable[[Conn], Awaitable[T]]

RETRY_FOR_S: Final = 3.0  # how long a caller keeps trying before it hears "unavailable"


class Retry:
    """A retry budget: attempts, total time and the backoff's first and largest wait."""

    __slots__ = ("attempts", "first_s", "for_s", "max_s")

    def __init__(
        self,
        *,
        attempts: int = 8,
        for_s: float = RETRY_FOR_S,
        first_s: float = 0.02,
        max_s: float = 1.0,
    ) -> None:
        self.attempts = attempts
        self.for_s = for_s
        self.first_s = first_s
        self.max_s = max_s


class _CommitFailed(Exception):
    """The COMMIT itself failed with an answer from the server (rolled back)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def transaction(
    pool: asyncpg.Pool,
    unit: Unit[T],
    *,
    where: str,
    retry: Retry | None = None,
    synchronous_commit: bool = True,
    outage: Outage | None = None,
) -> T:
    """Run `unit(conn)` in one transaction on a connection of `pool`; its result once
    COMMIT answered.

    A transient error (engine/pg/errors.py) raised before COMMIT runs the whole unit again
    after a jittered backoff, within `retry`'s budget; once it is spent the error is a
    StorageError (`where` names the database, without a password). Anything the unit
    raises on purpose (an EngineError such as StaleEpoch) is never retried. A COMMIT cut
    off (connection lost, timeout) raises CommitOutcomeUnknown and is never retried: the
    unit may have been applied. `synchronous_commit=False` lets the server acknowledge
    before its WAL is flushed: only for writes whose loss in a server crash is harmless
    (never an epoch bump, never anything acknowledged to a client). `outage` hears whether
    the database answered (engine/pg/outage.py)."""
    return await _reported(
        _with_retries(retry or Retry(), lambda: _attempt(pool, unit, where, synchronous_commit)),
        where,
        outage,
    )


async def statement(
    pool: asyncpg.Pool,
    unit: Unit[T],
    *,
    where: str,
    retry: Retry | None = None,
    outage: Outage | None = None,
) -> T:
    """Run `unit(conn)`, which sends exactly one statement, with no BEGIN and COMMIT
    around it: PostgreSQL runs a lone statement as its own transaction, all or nothing,
    so the unit is as atomic as in `transaction`, at one round trip instead of three
    (most of a write's client CPU is spent per round trip). The difference is honesty
    about a cut: the statement carries its own COMMIT, so a connection lost while it
    runs is CommitOutcomeUnknown, never retried; an error the server answered (it rolled
    back) is retried or raised as `transaction` does."""

    async def once() -> T:
        async with pool.acquire() as conn:  # a failure to connect: nothing was sent
            try:
                return await unit(conn)
            except Exception as exc:
                if _never_sent(exc):
                    conn.terminate()  # broken before this statement: the pool replaces it
                    raise  # transient: retried
                unknown = commit_outcome(exc, where)
                if unknown is not None:
                    raise unknown from exc
                raise

    return await _reported(_with_retries(retry or Retry(), once), where, outage)


async def read(
    pool: asyncpg.Pool,
    query: Unit[T],
    *,
    where: str,
    retry: Retry | None = None,
    outage: Outage | None = None,
) -> T:
    """Run `query(conn)` outside any explicit transaction (each statement is its own):
    for reads, which need no BEGIN and COMMIT round trips. Transient errors are retried
    as `transaction` does; once the budget is spent they are a StorageError."""

    async def once() -> T:
        async with pool.acquire() as conn:
            return await query(conn)

    return await _reported(_with_retries(retry or Retry(), once), where, outage)


async def _reported(attempts: Awaitable[T], where: str, outage: Outage | None) -> T:
    """What `attempts` (a unit and its retries) came to, as the engine's errors, with the
    outage tracker told whether the database answered."""
    try:
        result = await attempts
    except _CommitFailed as exc:
        raise _translated(exc.error, where, outage) from exc.error
    except CommitOutcomeUnknown as exc:
        if outage is not None:
            outage.failed(exc.message)
        raise
    except Exception as exc:
        translated = _translated(exc, where, outage)
        if translated is exc:
            raise
        raise translated from exc
    if outage is not None and outage.down:
        outage.answered()
    return result


async def _with_retries(policy: Retry, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again after a jittered backoff while it fails transiently, within the
    budget. The first attempt runs outside tenacity: its machinery costs about 30 µs of
    CPU a call, a tenth of a write's, and almost every call succeeds at once."""
    try:
        return await call()
    except Exception as exc:
        if not _retryable(exc) or policy.attempts <= 1:
            raise
    await asyncio.sleep(random.uniform(0, policy.first_s))  # jitter before the second
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts - 1) | stop_after_delay(policy.for_s),
        wait=wait_random_exponential(multiplier=policy.first_s, max=policy.max_s),
        retry=retry_if_exception(_retryable),
        retry_error_callback=_give_up,
        reraise=True,
    )

    async def again() -> T:  # a coroutine function: tenacity awaits only those
        return await call()

    result: T = await retrying(again)
    return result


def _never_sent(exc: BaseException) -> bool:
    """asyncpg refused to start the operation on a connection it already knew to be
    closed or broken (a server that died while the connection sat in the pool): it
    checks, and raises these, before it writes a byte."""
    return isinstance(exc, asyncpg.exceptions.InternalClientError) or (
        type(exc) is asyncpg.InterfaceError
    )


def _retryable(exc: BaseException) -> bool:
    inner = exc.error if isinstance(exc, _CommitFailed) else exc
    return not isinstance(inner, CommitOutcomeUnknown) and is_transient(inner)


def _give_up(state: RetryCallState) -> object:
    assert state.outcome is not None
    return state.outcome.result()  # re-raises the last error


def _translated(exc: BaseException, where: str, outage: Outage | None) -> BaseException:
    translated = storage_error(exc, where)
    if translated is None:
        return exc
    if outage is not None and _unreachable(translated):
        outage.failed(translated.message)
    return translated


def _unreachable(err: StorageError) -> bool:
    return err.fault is StorageFault.UNAVAILABLE


async def _attempt(pool: asyncpg.Pool, unit: Unit[T], where: str, synchronous_commit: bool) -> T:
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            if not synchronous_commit:
                await conn.execute("SET LOCAL synchronous_commit = off")
            result = await unit(conn)
        except BaseException:
            if not conn.is_closed():
                try:
                    await tr.rollback()
                except Exception:  # a broken connection fails its rollback in many ways
                    conn.terminate()  # the pool replaces it; the unit's error is raised
            raise
        try:
            await tr.commit()
        except Exception as exc:
            unknown = commit_outcome(exc, where)
            if unknown is not None:
                raise unknown from exc
            raise _CommitFailed(exc) from exc
        return result
