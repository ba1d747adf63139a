"""A backlog of order sagas left unfinished as a crash leaves them, for the recovery
benchmark: each saga really ran, against the real services, up to a random point, and
stopped there the way the runner stops when its process is SIGKILLed.

How (all through the engine's own API: the log's `create` and `append`, the pure core's
`decide` and `evolve`, the order saga's real steps):
- each saga is created owned by a dead gateway whose lease has expired, at epoch 1;
- it is then driven as the runner drives it (the core decides, an intent is written
  ahead, the real participant is called, the outcome rides with the next write) until
  its cut: a decision drawn uniformly among the saga's calls, plus "before finish";
- at the cut it stops at one of the runner's crash points, drawn at random:
  `before_intent` (the previous outcome is lost with the process: that step is in
  doubt), `after_intent` (intent durable, call never made) or `after_call` (the
  participant acted, its outcome never recorded);
- a share of the orders are declined (over 500.00), so those cut after the charge are
  COMPENSATING, some half-way through their compensations.

So the participants hold exactly the effects a crashed gateway would have left behind,
and the audit after recovery judges the result. Seeded: the same seed, the same spread.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from engine.core import (
    Call,
    Compensate,
    Phase,
    StartCompensation,
    Transition,
    decide,
    evolve,
    fold,
    record_reason,
)
from engine.definition import Done, SagaDefinition, StepContext
from engine.log_settings import SagaLogSettings, open_saga_log
from engine.saga_log import NewSaga, SagaLog
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from orders.model import ORDER_SAGA, Item, OrderRequest
from orders.participants import Participants, ServiceAddresses
from orders.saga import order_saga

__all__ = ["Cut", "Spread", "build_crashed", "build_fresh"]

DEAD_OWNER: Final = "gateway@crashed-host:1:deadbeef"
EPOCH: Final = 1
CONFIRMABLE: Final = OrderRequest("cust_bench", (Item("prod_1", 1, 5_000),))
DECLINED: Final = OrderRequest("cust_bench", (Item("prod_1", 1, 60_000),))  # over 500.00
DECLINED_SHARE: Final = 0.25
BUILD_CONCURRENCY: Final = 128


class Cut(StrEnum):
    BEFORE_INTENT = "before_intent"
    AFTER_INTENT = "after_intent"
    AFTER_CALL = "after_call"
    BEFORE_FINISH = "before_finish"


@dataclass(frozen=True, slots=True)
class Spread:
    """Where the sagas stopped: (status, last step reached or '-', crash point) → count."""

    counts: tuple[tuple[tuple[str, str, str], int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def by(self, index: int) -> dict[str, int]:
        out: Counter[str] = Counter()
        for key, n in self.counts:
            out[key[index]] += n
        return dict(sorted(out.items()))


async def _drive_until(
    log: SagaLog, defn: SagaDefinition, new: NewSaga, cut: int, point: Cut, now_ms: int
) -> tuple[str, str, str]:
    await log.create(new, owner=DEAD_OWNER, lease_expires_ms=1, now_ms=now_ms)
    state = fold(defn, [Transition("", Phase.CREATED, 1)])
    pending: list[Transition] = []
    calls = 0
    step_name = "-"
    while True:
        nxt = decide(defn, state)
        if isinstance(nxt, StartCompensation):
            t = Transition("", Phase.COMPENSATE, 0, nxt.reason)
            pending.append(t)
            state = evolve(defn, state, t)
            continue
        if not isinstance(nxt, Call | Compensate):  # the terminal write: never made
            return (state.status.value, step_name, Cut.BEFORE_FINISH.value)
        comp = isinstance(nxt, Compensate)
        step = defn.steps[nxt.step]
        step_name = f"{'undo ' if comp else ''}{step.name}"
        if calls == cut and point is Cut.BEFORE_INTENT:
            return (state.status.value, step_name, point.value)  # `pending` dies with us
        intent = Transition(step.name, Phase.COMP_INTENT if comp else Phase.INTENT, nxt.attempt)
        state = evolve(defn, state, intent)
        await log.append(
            new.id,
            EPOCH,
            [*pending, intent],
            status=state.status,
            reason=record_reason(state),
            now_ms=now_ms,
        )
        pending = []
        if calls == cut and point is Cut.AFTER_INTENT:
            return (state.status.value, step_name, point.value)
        fn = step.compensation if comp else step.action
        assert fn is not None
        ctx = StepContext(
            new.id,
            new.payload,
            EPOCH,
            nxt.attempt,
            step.name,
            reason=state.reason if comp else None,
        )
        try:
            result = await fn(ctx)
        except Exception:  # a transient failure: the outcome is unknown, as after a crash
            return (state.status.value, step_name, Cut.AFTER_CALL.value)
        if calls == cut and point is Cut.AFTER_CALL:
            return (state.status.value, step_name, point.value)
        if isinstance(result, Done):
            phase = Phase.COMP_DONE if comp else Phase.DONE
            outcome = Transition(step.name, phase, nxt.attempt)
        else:
            outcome = Transition(step.name, Phase.REFUSED, nxt.attempt, result.reason)
        pending.append(outcome)
        state = evolve(defn, state, outcome)
        calls += 1


def _calls_on_path(declined: bool) -> int:
    # confirmed: create, reserve, charge, confirm; declined: create, reserve, charge
    # (refused), then undo reserve, undo create.
    return 5 if declined else 4


LogAt = Path | SagaLogSettings  # the SQLite file, or the settings naming the log


async def _open(log_at: LogAt) -> SagaLog:
    if isinstance(log_at, Path):
        return SqliteSagaLog.open(DbConfig(log_at))
    return await open_saga_log(log_at)


async def _build(
    log_at: LogAt, services: ServiceAddresses, sagas: int, seed: int, crashed: bool
) -> Spread:
    rng = random.Random(seed)
    log = await _open(log_at)
    participants = Participants(services)
    defn = order_saga(participants)
    sem = asyncio.Semaphore(BUILD_CONCURRENCY)
    counts: Counter[tuple[str, str, str]] = Counter()
    now_ms = 1  # every lease long expired: claimable at once

    async def one(i: int, declined: bool, cut: int, point: Cut) -> None:
        order = DECLINED if declined else CONFIRMABLE
        new = NewSaga(f"rec-{i:06d}", ORDER_SAGA, order.to_payload(), f"rec-key-{i}")
        async with sem:
            if crashed:
                where = await _drive_until(log, defn, new, cut, point, now_ms)
            else:  # queued by a busy gateway: durable, never started, owned by nobody
                await log.create(new, owner=None, lease_expires_ms=0, now_ms=now_ms)
                where = ("RUNNING", "-", "queued")
        counts[where] += 1

    jobs = []
    for i in range(sagas):
        declined = rng.random() < DECLINED_SHARE
        n = _calls_on_path(declined)
        cut = rng.randrange(n + 1)  # n: every call made, the terminal write not
        point = Cut.BEFORE_FINISH if cut == n else rng.choice(list(Cut)[:3])
        jobs.append(one(i, declined, cut, point))
    try:
        await asyncio.gather(*jobs)
    finally:
        await participants.close()
        await log.close()
    return Spread(tuple(sorted(counts.items())))


def build_crashed(log_at: LogAt, services: ServiceAddresses, sagas: int, seed: int) -> Spread:
    """`sagas` order sagas stopped at random points (see the module); their spread."""
    return asyncio.run(_build(log_at, services, sagas, seed, crashed=True))


def build_fresh(log_at: LogAt, services: ServiceAddresses, sagas: int) -> Spread:
    """`sagas` order sagas as a busy gateway queues them: durable, unowned, never run."""
    return asyncio.run(_build(log_at, services, sagas, 0, crashed=False))


def spread_lines(spread: Spread) -> Sequence[str]:
    """The spread in words, for the report."""
    total = spread.total or 1

    def share(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in d.items())

    return [
        f"by status: {share(spread.by(0))}",
        f"by the step they stopped at: {share(spread.by(1))}",
        f"by crash point: {share(spread.by(2))}",
    ]
