"""A quick measurement of the PostgreSQL saga log alone (no services, no HTTP): commits
per saga under concurrent load, and this process's CPU per write.

    python -m bench.pg_log_quick [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                 [--sagas 2000] [--concurrency 1,16,64]

Each saga writes as the order saga does on its happy path: a create, then an intent and
a done per step for three steps, then its finish (8 writes). A fresh database is created
on the server for each run and dropped after. Commits are counted by the log's group
commit (`on_batch`); CPU is `time.process_time()` of this process over all writes.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
import urllib.parse

import asyncpg

from engine.core import Phase, SagaStatus, Transition
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import NewSaga
from engine.sqlite import BatchStats

STEPS = ("reserve", "pay", "confirm")
WRITES_PER_SAGA = 2 + 2 * len(STEPS)


async def _saga(log: PgSagaLog, i: int) -> None:
    now = log.clock.now_ms()
    new = NewSaga(f"q{i}", "order", b'{"customer_id":"c"}', idempotency_key=f"k{i}")
    await log.create(new, owner="bench", lease_expires_ms=now + 10_000, now_ms=now)
    for step in STEPS:
        for phase in (Phase.INTENT, Phase.DONE):
            t = [Transition(step, phase, 1)]
            await log.append(f"q{i}", 1, t, status=SagaStatus.RUNNING, reason=None, now_ms=now)
    end = [Transition("", Phase.COMPLETED, 1)]
    await log.append(f"q{i}", 1, end, status=SagaStatus.COMPLETED, reason=None, now_ms=now)


async def run(url: str, sagas: int, concurrency: int) -> dict[str, float]:
    batches: list[BatchStats] = []
    log = await PgSagaLog.open(parse_url(url, "--url"), on_batch=batches.append)
    try:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await _saga(log, i)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sagas)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await log.close()
    writes = sagas * WRITES_PER_SAGA
    return {
        "concurrency": concurrency,
        "sagas_per_s": sagas / wall,
        "commits_per_saga": len(batches) / sagas,
        "writes_per_commit": writes / len(batches),
        "cpu_us_per_write": cpu / writes * 1e6,
    }


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_log_quick")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    for c in (int(x) for x in args.concurrency.split(",")):
        name = f"bench_{secrets.token_hex(4)}"
        await _admin(args.url, f'CREATE DATABASE "{name}"')
        try:
            parts = urllib.parse.urlsplit(args.url)
            url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
            r = await run(url, args.sagas, c)
        finally:
            await _admin(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(
            f"concurrency {r['concurrency']:>4.0f}: {r['sagas_per_s']:7.0f} sagas/s, "
            f"{r['commits_per_saga']:5.2f} commits/saga ({r['writes_per_commit']:5.1f} "
            f"writes/commit), {r['cpu_us_per_write']:5.0f} µs client CPU/write"
        )


if __name__ == "__main__":
    asyncio.run(main())
