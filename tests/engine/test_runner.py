"""The runner against a toy world of idempotent participants: outcomes, retries,
compensation, parking, operators' changes, fencing, crashes at every crash point, leases,
the durable queue and graceful stop. Assertions are on the world's ledger and the log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine.core import CannotChange, Phase, SagaStatus
from engine.crashpoints import CRASH_POINTS, STEP_POINTS, CrashPoints
from engine.definition import (
    Done,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from engine.errors import Overloaded
from engine.memory_log import MemorySagaLog
from engine.operations import cancel_saga, retry_saga
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga, SagaLog, SagaRecord
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from tests.engine.world import FAST, Faults, World, definition

# Keeps failing steps busy retrying (never exhausted) while a test acts around them.
PATIENT = RetryPolicy(1000, 1000, initial_backoff_s=0.005, max_backoff_s=0.005)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def now_ms(self) -> int:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaLog]:
    adapter: SagaLog = (
        SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))
        if request.param == "sqlite"
        else MemorySagaLog()
    )
    yield adapter
    await adapter.close()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "world.db")


@dataclass
class Harness:
    log: SagaLog
    defn: SagaDefinition
    world: World
    clock: FakeClock

    def runner(self, owner: str, crash: CrashPoints | None = None, **kw: object) -> Runner:
        settings = RunnerSettings(owner=owner, lease_s=10, claim=False, drain_s=2, **kw)  # type: ignore[arg-type]
        return Runner(self.log, [self.defn], settings, clock=self.clock, crash=crash)

    async def run(self, saga_id: str = "s-1", crash: CrashPoints | None = None) -> SagaRecord:
        """Start a saga on one runner; if it crashes, a second runner recovers it."""
        first = self.runner("a", crash)
        await first.start()
        with contextlib.suppress(asyncio.CancelledError):  # crashed right after create
            await first.start_saga(NewSaga(saga_id, self.defn.name, b"{}"))
        await asyncio.wait_for(first.wait_idle(), 10)
        await first.abandon()
        rec = await self.log.get(saga_id)
        assert rec is not None
        if rec.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
            self.clock.now += 11_000  # the dead owner's lease runs out
            second = self.runner("b")
            await second.start()
            assert await second.claim_now() == 1
            await asyncio.wait_for(second.wait_idle(), 10)
            await second.stop()
            rec = await self.log.get(saga_id)
            assert rec is not None
        return rec

    async def phases(self, saga_id: str = "s-1") -> list[tuple[str, Phase]]:
        return [(t.step, t.phase) for t in await self.log.transitions(saga_id)]


def harness(log: SagaLog, world: World, kinds: Sequence[StepKind] | None = None) -> Harness:
    defn = definition(world) if kinds is None else definition(world, kinds)
    return Harness(log, defn, world, FakeClock())


async def test_success_applies_each_effect_once(log: SagaLog, world: World) -> None:
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is SagaStatus.COMPLETED
    world.check(h.defn, "s-1", rec.status)
    assert await h.phases() == [
        ("", Phase.CREATED),
        *[(f"s{i}", ph) for i in range(4) for ph in (Phase.INTENT, Phase.DONE)],
        ("", Phase.COMPLETED),
    ]


async def test_a_saga_driven_here_is_created_with_its_first_intent_in_one_commit(
    tmp_path: Path, world: World
) -> None:
    commits: list[int] = []
    log = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"), on_batch=lambda b: commits.append(1))
    try:
        h = harness(log, world)
        before = len(commits)
        rec = await h.run()
        assert rec.status is SagaStatus.COMPLETED
        world.check(h.defn, "s-1", rec.status)
        # The creation with s0's intent, then one per step: its outcome with the next
        # step's intent, the last one's with the saga's end.
        assert len(commits) - before == 1 + len(h.defn.steps)
        ts = await log.transitions("s-1")
        assert [(t.step, t.phase, t.attempt) for t in ts[:3]] == [
            ("", Phase.CREATED, 1),
            ("s0", Phase.INTENT, 1),
            ("s0", Phase.DONE, 1),
        ]
    finally:
        await log.close()


async def test_a_first_step_that_fails_numbers_its_attempts_after_the_one_made_with_the_saga(
    log: SagaLog, world: World
) -> None:
    world.faults = Faults(fail_before={"s0": 2})
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is SagaStatus.COMPLETED
    world.check(h.defn, "s-1", rec.status)
    s0 = [(t.phase, t.attempt) for t in await log.transitions("s-1") if t.step == "s0"]
    assert s0 == [
        (Phase.INTENT, 1), (Phase.ERROR, 1),
        (Phase.INTENT, 2), (Phase.ERROR, 2),
        (Phase.INTENT, 3), (Phase.DONE, 3),
    ]  # fmt: skip


async def test_refusal_compensates_what_was_done(log: SagaLog, world: World) -> None:
    world.faults = Faults(refuse={"s2"})
    h = harness(log, world)
    rec = await h.run()
    assert (rec.status, rec.reason) == (SagaStatus.COMPENSATED, "s2_refused")
    world.check(h.defn, "s-1", rec.status)
    assert (await h.phases())[-7:] == [
        ("s2", Phase.REFUSED),
        ("", Phase.COMPENSATE),
        ("s1", Phase.COMP_INTENT), ("s1", Phase.COMP_DONE),  # LIFO: the latest step first
        ("s0", Phase.COMP_INTENT), ("s0", Phase.COMP_DONE),
        ("", Phase.COMPENSATED),
    ]  # fmt: skip


async def test_transient_failures_are_retried(log: SagaLog, world: World) -> None:
    world.faults = Faults(fail_before={"s1": 2}, lose_after={"s2": 1})
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is SagaStatus.COMPLETED
    world.check(h.defn, "s-1", rec.status)
    ts = await log.transitions("s-1")
    assert [t.attempt for t in ts if t.step == "s1" and t.phase is Phase.INTENT] == [1, 2, 3]
    errors = [t for t in ts if t.phase is Phase.ERROR]
    assert [t.step for t in errors] == ["s1", "s1", "s2"]
    assert all(t.error for t in errors)


async def test_exhausted_step_compensates_including_the_step_in_doubt(
    log: SagaLog, world: World
) -> None:
    world.faults = Faults(lose_after={"s1": 99})  # applied, but never a reply
    h = harness(log, world)
    rec = await h.run()
    assert (rec.status, rec.reason) == (SagaStatus.COMPENSATED, "s1_failed")
    world.check(h.defn, "s-1", rec.status)
    assert world.effects("s-1")["s1"][:2] == (1, 1), "the in-doubt step was undone"


async def test_pivot_out_of_attempts_parks_then_resumes(log: SagaLog, world: World) -> None:
    world.faults = Faults(fail_before={"s2": FAST.park_after})
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is SagaStatus.NEEDS_ATTENTION
    assert rec.reason is not None and "s2" in rec.reason

    await retry_saga(log, {h.defn.name: h.defn}, "s-1", actor="op", now_ms=h.clock.now)
    runner = h.runner("c")
    await runner.start()
    assert await runner.claim_now() == 1
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    rec2 = await log.get("s-1")
    assert rec2 is not None and rec2.status is SagaStatus.COMPLETED
    world.check(h.defn, "s-1", rec2.status)


async def test_compensation_that_never_succeeds_parks(log: SagaLog, world: World) -> None:
    world.faults = Faults(refuse={"s1"}, fail_undo={"s0": 99})
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is SagaStatus.NEEDS_ATTENTION
    assert rec.reason is not None and "compensating s0" in rec.reason


@pytest.mark.parametrize("fail", [False, True], ids=["completed", "compensated"])
async def test_a_pruned_saga_is_still_finished_to_every_decision(
    log: SagaLog, world: World, fail: bool
) -> None:
    # Pruning keeps only the final transition: the fold of it must still say "finished",
    # or a cancel could compensate an order that was confirmed long ago.
    if fail:
        world.faults = Faults(refuse={"s1"})
    h = harness(log, world)
    rec = await h.run()
    assert rec.status is (SagaStatus.COMPENSATED if fail else SagaStatus.COMPLETED)
    pruned = await log.prune_history(finished_before_ms=h.clock.now + 1, limit=10, cursor=None)
    assert pruned.sagas == 1 and len(await log.transitions("s-1")) == 1
    defs = {h.defn.name: h.defn}
    with pytest.raises(CannotChange) as cancelled:
        await cancel_saga(log, defs, "s-1", actor="op", now_ms=h.clock.now)
    assert cancelled.value.code == "saga_finished"
    with pytest.raises(CannotChange) as retried:
        await retry_saga(log, defs, "s-1", actor="op", now_ms=h.clock.now)
    assert retried.value.code == "not_parked"
    runner = h.runner("b")
    await runner.start()
    assert await runner.claim_now() == 0
    await runner.stop()
    assert await log.get("s-1") == rec


async def test_operator_cancel_before_the_pivot(log: SagaLog, world: World) -> None:
    h = Harness(log, definition(world, policy=PATIENT), world, FakeClock())
    world.faults = Faults(fail_before={"s1": 99})  # keep it busy retrying s1
    runner = h.runner("a")
    await runner.start()
    await runner.start_saga(NewSaga("s-1", h.defn.name, b"{}"))
    await asyncio.sleep(0.01)

    await cancel_saga(log, {h.defn.name: h.defn}, "s-1", actor="op", now_ms=h.clock.now)
    world.faults = Faults()
    await asyncio.wait_for(runner.wait_idle(), 10)  # the old owner is fenced and drops it
    assert await runner.claim_now() == 1
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    rec = await log.get("s-1")
    assert rec is not None
    assert (rec.status, rec.reason) == (SagaStatus.COMPENSATED, "cancelled_by_operator")
    world.check(h.defn, "s-1", rec.status)


CASES = [
    (point, step)
    for point in CRASH_POINTS
    for step in (["s0", "s1", "s2", "s3"] if point in STEP_POINTS else [""])
]


class CrashAt(CrashPoints):
    """Simulated crash: the task dies where it stands; nothing pending is flushed."""

    def hit(self, point: str, step: str = "") -> None:
        if self.point == point and (self.step is None or self.step == step) and not self._hits:
            self._hits = 1
            raise asyncio.CancelledError


async def test_a_saga_cancelled_mid_call_and_reclaimed_here_is_driven_to_the_end(
    log: SagaLog, world: World
) -> None:
    # The operator's change unowns the saga while this runner is inside s0's call; the
    # runner claims it back at once. The old drive is fenced, and the claim must be driven
    # (not left owned and undriven while the heartbeat renews its lease forever).
    h = harness(log, world)
    gate = asyncio.Event()
    act = h.defn.steps[0].action

    async def slow(ctx: StepContext) -> StepResult:
        if ctx.epoch == 1:
            await gate.wait()
        return await act(ctx)

    h.defn = replace(h.defn, steps=(replace(h.defn.steps[0], action=slow), *h.defn.steps[1:]))
    runner = h.runner("a")
    await runner.start()
    await runner.start_saga(NewSaga("s-1", h.defn.name, b"{}"))
    for _ in range(100):
        if (await h.phases())[-1] == ("s0", Phase.INTENT):
            break
        await asyncio.sleep(0.01)
    await cancel_saga(log, {h.defn.name: h.defn}, "s-1", actor="op", now_ms=h.clock.now)
    assert await runner.claim_now() == 1
    gate.set()
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    rec = await log.get("s-1")
    assert rec is not None
    assert (rec.status, rec.reason) == (SagaStatus.COMPENSATED, "cancelled_by_operator")
    world.check(h.defn, "s-1", rec.status)


@pytest.mark.parametrize("refuse", [False, True], ids=["success", "refused"])
@pytest.mark.parametrize(("point", "step"), CASES)
async def test_crash_at_every_point_recovers_consistently(
    log: SagaLog, world: World, point: str, step: str, refuse: bool
) -> None:
    if refuse:
        world.faults = Faults(refuse={"s2"})
    h = harness(log, world)
    rec = await h.run(crash=CrashAt(point, step or None))
    expected = SagaStatus.COMPENSATED if refuse else SagaStatus.COMPLETED
    assert rec.status is expected
    world.check(h.defn, "s-1", rec.status)


async def test_a_stale_owner_drops_the_saga(log: SagaLog, world: World) -> None:
    world.faults = Faults(fail_before={"s0": 99})
    h = Harness(log, definition(world, policy=PATIENT), world, FakeClock())
    slow = h.runner("a")
    await slow.start()
    await slow.start_saga(NewSaga("s-1", h.defn.name, b"{}"))
    await asyncio.sleep(0.01)
    h.clock.now += 11_000
    other = h.runner("b")
    await other.start()
    world.faults = Faults()
    assert await other.claim_now() == 1
    await asyncio.wait_for(asyncio.gather(slow.wait_idle(), other.wait_idle()), 10)
    rec = await log.get("s-1")
    assert rec is not None and rec.status is SagaStatus.COMPLETED and rec.owner == "b"
    world.check(h.defn, "s-1", rec.status)
    await slow.stop()
    await other.stop()


async def test_busy_runner_queues_in_the_log_and_the_pump_drains(
    log: SagaLog, world: World
) -> None:
    h = harness(log, world)
    runner = Runner(
        log, [h.defn],
        RunnerSettings(owner="a", capacity=2, poll_s=0.01, claim_batch=2),
        clock=h.clock,
    )  # fmt: skip
    await runner.start()
    results = [await runner.start_saga(NewSaga(f"s-{i}", h.defn.name, b"{}")) for i in range(10)]
    owners = [r.record.owner for r in results]
    assert owners.count(None) >= 8 - 2, "beyond capacity, sagas wait in the log"
    for _ in range(500):
        counts = await log.count_by_status()
        if counts[SagaStatus.COMPLETED] == 10:
            break
        await asyncio.sleep(0.01)
    await runner.stop()
    for i in range(10):
        rec = await log.get(f"s-{i}")
        assert rec is not None and rec.status is SagaStatus.COMPLETED
        world.check(h.defn, f"s-{i}", rec.status)


async def test_a_burst_of_creates_never_drives_past_capacity(log: SagaLog, world: World) -> None:
    # Every saga keeps retrying its first step, so no slot frees during the burst. The
    # creates await the log together; each used to see the same free slot and take it.
    world.faults = Faults(fail_before={"s0": 99})
    h = Harness(log, definition(world, policy=PATIENT), world, FakeClock())
    runner = h.runner("a", capacity=3)
    await runner.start()
    results = await asyncio.gather(
        *(runner.start_saga(NewSaga(f"s-{i}", h.defn.name, b"{}")) for i in range(20))
    )
    owned = [r.record.id for r in results if r.record.owner is not None]
    assert len(owned) == 3 and runner.active == 3, (owned, runner.active)
    assert await log.count_claimable(now_ms=h.clock.now) == 17, "the rest wait in the log"
    await runner.stop()


async def test_graceful_stop_hands_sagas_back(log: SagaLog, world: World) -> None:
    world.faults = Faults(fail_before={"s0": 99})
    h = Harness(log, definition(world, policy=PATIENT), world, FakeClock())
    runner = h.runner("a")
    await runner.start()
    await runner.start_saga(NewSaga("s-1", h.defn.name, b"{}"))
    await asyncio.sleep(0.01)
    await runner.stop()
    rec = await log.get("s-1")
    assert rec is not None and rec.owner is None and rec.status is SagaStatus.RUNNING
    assert await log.count_claimable(now_ms=h.clock.now) == 1, "claimable at once"


async def test_heartbeat_renews_leases(log: SagaLog, world: World) -> None:
    world.faults = Faults(fail_before={"s0": 10_000})
    h = Harness(log, definition(world, policy=PATIENT), world, FakeClock())
    runner = Runner(
        log, [h.defn],
        RunnerSettings(owner="a", lease_s=0.15, claim=False),
        clock=h.clock,
    )  # fmt: skip
    await runner.start()
    await runner.start_saga(NewSaga("s-1", h.defn.name, b"{}"))
    before = await log.get("s-1")
    assert before is not None
    h.clock.now += 100
    # A few heartbeats are due every 0.15 s; a loaded machine may delay them, so wait
    # for one (bounded) instead of sleeping a fixed time.
    after: SagaRecord | None = before
    for _ in range(200):
        await asyncio.sleep(0.05)
        after = await log.get("s-1")
        if after is not None and after.lease_expires_ms >= before.lease_expires_ms + 100:
            break
    await runner.abandon()
    assert after is not None
    assert after.lease_expires_ms >= before.lease_expires_ms + 100


async def test_steps_past_their_timeout_are_retried(log: SagaLog, world: World) -> None:
    calls = 0

    async def slow_then_fast(ctx: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1)
        return await world.act(ctx)  # type: ignore[arg-type]

    base = definition(world, [StepKind.COMPENSATABLE])
    step = base.steps[0]
    defn = SagaDefinition(
        "timeouts",
        (type(step)(step.name, slow_then_fast, step.compensation, step.kind,  # type: ignore[arg-type]
                    RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.001), 0.05),),
    )  # fmt: skip
    h = Harness(log, defn, world, FakeClock())
    rec = await h.run()
    assert rec.status is SagaStatus.COMPLETED
    ts = await log.transitions("s-1")
    assert any(t.phase is Phase.ERROR and "timed out" in (t.error or "") for t in ts)


async def test_a_saga_nobody_here_can_drive_is_parked_not_looped(
    log: SagaLog, world: World
) -> None:
    h = harness(log, world)
    await log.create(NewSaga("ghost-1", "ghost", b"{}"), owner=None, lease_expires_ms=0, now_ms=1)
    runner = h.runner("a")
    await runner.start()
    assert await runner.claim_now() == 1
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    rec = await log.get("ghost-1")
    assert rec is not None
    assert rec.status is SagaStatus.NEEDS_ATTENTION
    assert rec.reason is not None
    assert "unknown saga definition" in rec.reason


async def test_new_sagas_queue_behind_waiting_ones_instead_of_overtaking(log: SagaLog) -> None:
    gate = asyncio.Event()

    async def held(ctx: StepContext) -> StepResult:
        if ctx.saga_id == "first":
            await gate.wait()
        return Done()

    defn = SagaDefinition("held", (Step("only", held, kind=StepKind.PIVOT),))
    runner = Runner(log, [defn], RunnerSettings(owner="a", capacity=1, claim=False))
    await runner.start()
    first = await runner.start_saga(NewSaga("first", "held", b"{}"))
    waiting = await runner.start_saga(NewSaga("waiting", "held", b"{}"))
    assert (first.record.owner, waiting.record.owner) == ("a", None)
    assert (first.queued, waiting.queued) == (False, True)
    gate.set()
    await asyncio.wait_for(runner.wait_idle(), 5)
    assert runner.has_capacity and not runner.takes_new  # a slot, but one waits for it
    late = await runner.start_saga(NewSaga("late", "held", b"{}"))
    assert late.record.owner is None, "a new saga must not overtake one waiting in the log"
    assert await runner.claim_now() == 1  # the oldest: "waiting"
    await asyncio.wait_for(runner.wait_idle(), 5)
    assert await runner.claim_now() == 1  # then "late"; the queue is empty again
    await asyncio.wait_for(runner.wait_idle(), 5)
    assert await runner.claim_now() == 0
    assert runner.takes_new
    for sid in ("first", "waiting", "late"):
        rec = await log.get(sid)
        assert rec is not None and rec.status is SagaStatus.COMPLETED
    claimed = [(await log.transitions(s))[1].at_ms for s in ("waiting", "late")]
    assert claimed == sorted(claimed)
    # Only the saga driven at once came with its first intent; a queued one waited bare.
    phases = [t.phase for t in await log.transitions("first")][:2]
    assert phases == [Phase.CREATED, Phase.INTENT]
    assert [t.phase for t in await log.transitions("waiting")][:2] == [
        Phase.CREATED,
        Phase.CLAIMED,
    ]
    await runner.stop()


async def test_past_max_queue_a_new_saga_is_refused_before_anything_is_written(
    log: SagaLog,
) -> None:
    gate = asyncio.Event()

    async def held(ctx: StepContext) -> StepResult:
        await gate.wait()
        return Done()

    defn = SagaDefinition("held", (Step("only", held, kind=StepKind.PIVOT),))
    settings = RunnerSettings(owner="a", capacity=1, claim=False, max_queue=2)
    runner = Runner(log, [defn], settings)
    await runner.start()
    started = [await runner.start_saga(NewSaga(f"s{i}", "held", b"{}")) for i in range(3)]
    assert [s.queued for s in started] == [False, True, True]
    with pytest.raises(Overloaded) as refused:
        await runner.start_saga(NewSaga("s3", "held", b"{}"))
    assert refused.value.waiting >= 2
    assert await log.get("s3") is None, "a refused saga must not be in the log"
    gate.set()
    await runner.stop()
