"""Leases on a PostgreSQL log are judged by the database's clock: the log's clock reads
the server's timeline, and a claimer whose reading runs ahead of the server (a host with a
skewed clock) cannot take a live lease; an expired one it can."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import NewSaga

HOUR_MS = 3_600_000


@pytest.fixture
async def log(pg_url: str) -> AsyncIterator[PgSagaLog]:
    opened = await PgSagaLog.open(parse_url(pg_url, "SAGA_DATABASE_URL"))
    yield opened
    await opened.close()


async def _server_ms(log: PgSagaLog, pg_url: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        value = await conn.fetchval("SELECT (extract(epoch FROM clock_timestamp()) * 1000)")
    finally:
        await conn.close()
    return int(value)


async def test_the_log_clock_reads_the_server_timeline(
    log: PgSagaLog, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This host's wall clock an hour ahead: on one machine the server's timeline and ours
    # are the same, so only a skew tells a reading of the server from a reading of ours.
    real_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + HOUR_MS * 1_000_000)
    monkeypatch.setattr(time, "time", lambda: time.time_ns() / 1e9)
    before = log.clock.now_ms()
    server = await _server_ms(log, pg_url)
    after = log.clock.now_ms()
    # The server's reading falls between two of ours (a second's slack for the scheduler
    # of a loaded machine: this is a bound on the offset, not a speed).
    assert before - 1_000 <= server <= after + 1_000


async def test_a_reading_ahead_of_the_server_cannot_take_a_live_lease(
    log: PgSagaLog, pg_url: str
) -> None:
    server = await _server_ms(log, pg_url)
    for sid, lease in (("live", server + 60_000), ("dead", server - 1)):
        saga = NewSaga(sid, "order", b"{}")
        await log.create(saga, owner="a", lease_expires_ms=lease, now_ms=server)

    skewed = server + HOUR_MS  # a host whose clock runs an hour ahead
    assert await log.count_claimable(now_ms=skewed) == 1
    taken = await log.claim("b", limit=10, now_ms=skewed, lease_expires_ms=skewed + 10_000)
    assert [t.record.id for t in taken] == ["dead"]
    live_record = await log.get("live")
    assert live_record is not None and (live_record.owner, live_record.epoch) == ("a", 1)
