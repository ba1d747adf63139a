"""Book one trip on the durable SQLite log, or finish one a killed process left behind.

Everything lives in one folder: the saga log (`saga.db`) and the participants' stores
(`airline.db`, `hotel.db`, `cars.db`). A run starts a Runner with claiming on: its pump
takes over any unfinished saga whose owner's lease has run out, so recovery after a
crash is the same road as a normal run (and the same command).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from engine import (
    DbConfig,
    NewSaga,
    Runner,
    RunnerSettings,
    SagaDefinition,
    SagaLog,
    SagaRecord,
    SagaStatus,
    SqliteSagaLog,
    StepContext,
    StepResult,
    new_owner_id,
)
from examples.trip.participants import Participants
from examples.trip.saga import TRIP_SAGA, TripRequest, trip_saga

__all__ = ["Options", "open_log", "run"]


@dataclass(frozen=True, slots=True)
class Options:
    folder: Path
    trip_id: str
    request: TripRequest
    resume: bool = False  # only finish what is in the log; start nothing
    crash_after: str | None = None  # a step name: die once its participant has answered
    lease_s: float = 1.0
    wait_s: float = 30.0


def open_log(folder: Path) -> SqliteSagaLog:
    return SqliteSagaLog.open(DbConfig(folder / "saga.db"))


async def run(opts: Options) -> int:
    """0 when the trip ended (booked or compensated), 1 when it did not."""
    log = open_log(opts.folder)
    participants = Participants.open(opts.folder)
    try:
        record = await _drive(log, participants, opts)
        if record is None:
            print(f"no trip {opts.trip_id!r} in {opts.folder}", file=sys.stderr)
            return 1
        await print_history(log, record)
        print_participants(participants, opts.trip_id)
        return 0 if record.status.finished else 1
    finally:
        await log.close()
        participants.close()


async def _drive(log: SagaLog, participants: Participants, opts: Options) -> SagaRecord | None:
    definition = trip_saga(participants)
    if opts.crash_after is not None:
        definition = dying_after(definition, opts.crash_after)
    # A short lease, so that a second run takes over a dead one's trip within a second.
    # The owner id is new for every process: a restarted one never inherits old leases.
    settings = RunnerSettings(
        owner=new_owner_id("trip"), lease_s=opts.lease_s, poll_s=opts.lease_s / 4
    )
    runner = Runner(log, [definition], settings)
    await runner.start()  # its claim pump looks for unfinished sagas at once
    try:
        record = await _start_or_find(runner, log, opts)
        if record is None:
            return None
        return await wait_finished(log, opts.trip_id, opts.wait_s)
    finally:
        await runner.stop()  # hands back whatever it still owns, for the next run


async def _start_or_find(runner: Runner, log: SagaLog, opts: Options) -> SagaRecord | None:
    if opts.resume:
        return await log.get(opts.trip_id)
    # The trip id is the idempotency key: running the same command again starts nothing
    # new, it finds the saga it started (and the pump finishes it if its owner died).
    started = await runner.start_saga(
        NewSaga(opts.trip_id, TRIP_SAGA, opts.request.encode(), idempotency_key=opts.trip_id)
    )
    if not started.created:
        print(f"trip {opts.trip_id} exists already ({started.record.status}): not started again")
    return started.record


async def wait_finished(log: SagaLog, trip_id: str, wait_s: float) -> SagaRecord | None:
    """Read the saga's status from the log until it ends, parks, or `wait_s` passes."""
    deadline = time.monotonic() + wait_s
    while True:
        record = await log.get(trip_id)
        if record is None or record.status.finished or time.monotonic() > deadline:
            return record
        if record.status is SagaStatus.NEEDS_ATTENTION:
            return record
        await asyncio.sleep(0.05)


Action = Callable[[StepContext], Awaitable[StepResult]]


def dying_after(definition: SagaDefinition, step: str) -> SagaDefinition:
    """The same saga, but the process kills itself the moment `step`'s participant has
    answered: the effect is durable in the participant's store, the outcome is not yet in
    the saga log. A power cut there leaves exactly this; SIGKILL runs no cleanup."""

    def die_after(action: Action) -> Action:
        async def act(ctx: StepContext) -> StepResult:
            result = await action(ctx)
            print(f"{step}: {result}; killing this process now", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            return result  # not reached

        return act

    steps = tuple(
        replace(s, action=die_after(s.action)) if s.name == step else s for s in definition.steps
    )
    return replace(definition, steps=steps)


async def print_history(log: SagaLog, record: SagaRecord) -> None:
    """The saga's history as the log holds it: one line per durable transition."""
    because = f" ({record.reason})" if record.reason else ""
    print(f"trip {record.id}: {record.status}{because}, epoch {record.epoch}")
    print(f"  {'#':>3}  {'step':<7} {'phase':<12} {'attempt':>7}  note")
    for t in await log.transitions(record.id):
        line = f"  {t.seq:>3}  {t.step or '-':<7} {t.phase:<12} {t.attempt:>7}  {t.error or ''}"
        print(line.rstrip())


def print_participants(participants: Participants, trip_id: str) -> None:
    """What each participant's own store holds for the trip, and what it was asked."""
    print("participants:")
    for name, store in participants.stores().items():
        booking = store.booking(trip_id)
        state = "-" if booking is None else booking.state.value
        confirmation = (booking.confirmation if booking else None) or "-"
        asked = [
            f"{a.operation} x{a.calls}" + (f" (refused: {a.refused})" if a.refused else "")
            for a in store.answers(trip_id).values()
        ]
        print(f"  {name:<8} {state:<10} {confirmation:<6} {', '.join(asked) or 'never asked'}")
