"""One claimer of tests/pg/test_pg_claims.py, run as its own process: claims batches from
the PostgreSQL saga log and prints what it was handed (saga id and epoch) as JSON lines.
It drives nothing, so the sagas it claimed expire after the lease and are claimed again,
by it or by the other claimer. It stops once every saga was claimed and `reclaims` were
claimed a second time (or at the deadline)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg

from engine.pg.pool import Conn
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog


async def _done(conn: Conn, reclaims: int) -> bool:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE epoch = 1) AS never, "
        "count(*) FILTER (WHERE epoch >= 3) AS again FROM saga_log.sagas"
    )
    assert row is not None
    return int(row["never"]) == 0 and int(row["again"]) >= reclaims


async def main(url: str, owner: str, start_at: float, lease_ms: int, reclaims: int) -> None:
    cfg = parse_url(url, "URL")
    log = await PgSagaLog.open(cfg)
    watcher = await asyncpg.connect(cfg.dsn)
    deadline = start_at + 100
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # both start together
        rounds = 0
        while time.time() < deadline:
            now = log.clock.now_ms()
            taken = await log.claim(owner, limit=64, now_ms=now, lease_expires_ms=now + lease_ms)
            for t in taken:
                print(json.dumps([t.record.id, t.record.epoch]))
            rounds += 1
            if (rounds % 10 == 0 or not taken) and await _done(watcher, reclaims):
                return
            if not taken:
                await asyncio.sleep(0.05)
    finally:
        await watcher.close()
        await log.close()


if __name__ == "__main__":
    url, owner, start_at, lease_ms, reclaims = sys.argv[1:]
    asyncio.run(main(url, owner, float(start_at), int(lease_ms), int(reclaims)))
