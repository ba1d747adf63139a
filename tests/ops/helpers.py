"""Helpers for the operator tools' tests: run `python -m saga ...` as a user would, build a
saga log through the engine's own API, and park sagas the way the engine parks them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core import Phase, SagaStatus, Transition
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga, SagaRecord
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from orders.audit import Snapshot
from orders.audit_io import read_snapshot
from orders.model import ORDER_SAGA
from orders.participants import Participants
from orders.saga import OrderSagaPolicy, order_saga
from tests.support.stack import Stack, order

__all__ = [
    "Ran",
    "SagaSpec",
    "assert_error_line",
    "build_log",
    "ledgers",
    "park_with_runner",
    "record",
    "run_saga",
    "without_faults",
]

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str


def run_saga(*args: str, env: Mapping[str, str], stdin: str | None = None) -> Ran:
    """`python -m saga ARGS` as an operator types it; never raises on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "saga", *args],
        env=dict(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_error_line(ran: Ran, *fragments: str, code: int = 2) -> None:
    """One line on stderr, `saga: error: …` (or `saga: refused: …`), and the exit code."""
    lines = ran.err.strip().splitlines()
    assert ran.code == code, ran
    assert len(lines) == 1, ran.err
    assert lines[0].startswith(("saga: error: ", "saga: refused: ")), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@dataclass(frozen=True, slots=True)
class SagaSpec:
    """A saga to write into a log: its age at `now_ms`, and what its log says so far."""

    id: str
    age_ms: int
    transitions: Sequence[Transition] = ()
    status: SagaStatus = SagaStatus.RUNNING
    reason: str | None = None
    definition: str = ORDER_SAGA
    owner: str | None = "gateway@gone"


def build_log(path: Path, specs: Sequence[SagaSpec], now_ms: int) -> None:
    """Write the sagas in order (the last is the newest) through the log's own API."""

    async def write(log: SqliteSagaLog) -> None:
        for spec in specs:
            created = now_ms - spec.age_ms
            await log.create(
                NewSaga(spec.id, spec.definition, order(5_000).to_payload()),
                owner=spec.owner,
                lease_expires_ms=created + MINUTE_MS,
                now_ms=created,
            )
            if spec.transitions or spec.status is not SagaStatus.RUNNING:
                await log.append(
                    spec.id,
                    1,
                    spec.transitions,
                    status=spec.status,
                    reason=spec.reason,
                    now_ms=created + 1_000,
                )

    log = SqliteSagaLog.open(DbConfig(path))
    try:
        asyncio.run(write(log))
    finally:
        log.close_sync()


def record(path: Path, saga_id: str) -> tuple[SagaRecord, list[Transition]]:
    log = SqliteSagaLog.open(DbConfig(path))
    try:
        rec = log.get_sync(saga_id)
        assert rec is not None, saga_id
        return rec, log.transitions_sync(saga_id)
    finally:
        log.close_sync()


def ledgers(stack: Stack) -> Snapshot:
    """What the log and the three services hold now (the audit's own read)."""
    return read_snapshot(stack.log_path, stack.addresses)


# Parks quickly: the pivot gives up after 2 failed attempts instead of about a minute's.
QUICK_PARK = OrderSagaPolicy(park_after=2, initial_backoff_s=0.01, max_backoff_s=0.02)


def park_with_runner(stack: Stack, saga_ids: Sequence[str], timeout_s: float = 30.0) -> None:
    """Drive the claimable sagas with the engine's own runner (the same code the gateway
    and the daemon run, with a tiny budget) against the real services until every one of
    `saga_ids` is parked. With the payment service failing every Charge, each saga creates
    its order, reserves its stock, then parks at the pivot: NEEDS_ATTENTION."""

    async def drive() -> None:
        log = SqliteSagaLog.open(DbConfig(stack.log_path))
        participants = Participants(stack.addresses)
        runner = Runner(
            log,
            [order_saga(participants, QUICK_PARK)],
            RunnerSettings(owner="test-runner", lease_s=5.0, poll_s=0.05, drain_s=1.0),
        )
        await runner.start()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                records = [await log.get(sid) for sid in saga_ids]
                if all(r is not None and r.status is SagaStatus.NEEDS_ATTENTION for r in records):
                    return
                assert time.monotonic() < deadline, [r and r.status for r in records]
                await asyncio.sleep(0.05)
        finally:
            await runner.stop()
            await participants.close()
            await log.close()

    asyncio.run(drive())


def without_faults(stack: Stack, service: str) -> None:
    """Restart one service with fault injection off (same port, same ledger)."""
    proc = stack.services[service]
    proc.kill()
    proc.env.pop("SAGA_FAULTS", None)
    proc.start()


def parked_transitions(reason: str) -> list[Transition]:
    """A log that parked before its pivot: claimed again and again without progress."""
    return [
        Transition("create_order", Phase.INTENT, 1),
        Transition("create_order", Phase.DONE, 1),
        Transition("reserve_stock", Phase.INTENT, 1),
        Transition("", Phase.PARKED, 0, reason),
    ]
