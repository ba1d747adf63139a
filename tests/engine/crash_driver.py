"""A process that runs one toy saga on the SQLite log, for the real-process crash tests.

  python -m tests.engine.crash_driver start  LOG WORLD SAGA_ID [--refuse STEP]
  python -m tests.engine.crash_driver resume LOG WORLD SAGA_ID [--refuse STEP]
  python -m tests.engine.crash_driver claim  LOG OWNER OUT_JSON  (claims until none left)
  python -m tests.engine.crash_driver fill   LOG PREFIX COUNT     (creates and appends)

`start` honours SAGA_ENV=test SAGA_CRASH_AT=... (the engine's crash points: the process
SIGKILLs itself there). `resume` waits for the dead owner's lease to run out, claims the
saga like the recovery daemon would, and drives it to its end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from engine.core import Phase, SagaStatus, Transition
from engine.crashpoints import CrashPoints
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from tests.engine.world import Faults, World, definition

LEASE_S = 0.3


async def start(log_path: Path, world: World, saga_id: str) -> None:
    log = SqliteSagaLog.open(DbConfig(log_path))
    runner = Runner(
        log, [definition(world)],
        RunnerSettings(owner=f"start-{os.getpid()}", lease_s=LEASE_S, claim=False),
        crash=CrashPoints.from_env(os.environ),
    )  # fmt: skip
    await runner.start()
    await runner.start_saga(NewSaga(saga_id, "toy", b"{}"))
    await runner.wait_idle()
    await runner.stop()
    await log.close()


async def resume(log_path: Path, world: World, saga_id: str) -> None:
    log = SqliteSagaLog.open(DbConfig(log_path))
    runner = Runner(
        log, [definition(world)],
        RunnerSettings(owner=f"resume-{os.getpid()}", lease_s=LEASE_S, claim=False),
    )  # fmt: skip
    await runner.start()
    for _ in range(100):
        rec = await log.get(saga_id)
        if rec is None or rec.status.finished:
            break
        if await runner.claim_now():
            await runner.wait_idle()
        else:
            await asyncio.sleep(LEASE_S / 3)
    await runner.stop()
    await log.close()


async def claim_all(log_path: Path, owner: str) -> list[str]:
    """Claim sagas until none is left; return the ids this process got."""
    log = SqliteSagaLog.open(DbConfig(log_path, busy_timeout_ms=30_000))
    got: list[str] = []
    while True:
        taken = await log.claim(owner, limit=7, now_ms=10**15, lease_expires_ms=10**16)
        if not taken:
            break
        got += [t.record.id for t in taken]
    await log.close()
    return got


async def fill(log_path: Path, prefix: str, count: int) -> None:
    """Create `count` sagas concurrently and append one transition to each."""
    log = SqliteSagaLog.open(DbConfig(log_path, busy_timeout_ms=30_000))

    async def one(i: int) -> None:
        sid = f"{prefix}-{i}"
        await log.create(NewSaga(sid, "toy", b"{}"), owner=prefix, lease_expires_ms=1, now_ms=1)
        await log.append(
            sid, 1, [Transition("s0", Phase.INTENT, 1)],
            status=SagaStatus.RUNNING, reason=None, now_ms=2,
        )  # fmt: skip

    await asyncio.gather(*(one(i) for i in range(count)))
    await log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["start", "resume", "claim", "fill"])
    parser.add_argument("log", type=Path)
    parser.add_argument("world")
    parser.add_argument("saga")
    parser.add_argument("--refuse", default="")
    args = parser.parse_args()
    if args.mode == "claim":
        Path(args.saga).write_text(json.dumps(asyncio.run(claim_all(args.log, args.world))))
        return
    if args.mode == "fill":
        asyncio.run(fill(args.log, args.world, int(args.saga)))
        return
    world = World(Path(args.world), Faults(refuse={args.refuse} if args.refuse else set()))
    run = start if args.mode == "start" else resume
    asyncio.run(run(args.log, world, args.saga))


if __name__ == "__main__":
    main()
