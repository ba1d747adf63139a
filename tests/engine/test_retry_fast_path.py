"""A step's first attempt runs without tenacity; when it fails, tenacity takes over as if
it had made that attempt. The budget and the backoff sequence must be exactly those of a
tenacity loop from the start: max_attempts calls, then waits of initial, initial x m, ..."""

from __future__ import annotations

import asyncio
import itertools
import time

from engine.core import Phase, SagaStatus
from engine.definition import (
    Done,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from engine.errors import TransientStepError
from engine.memory_log import MemorySagaLog
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga

POLICY = RetryPolicy(
    max_attempts=3, park_after=3, initial_backoff_s=0.05, max_backoff_s=1.0, jitter_s=0.0
)


async def _run(fails: int) -> tuple[SagaStatus, list[int], list[float]]:
    calls: list[float] = []

    async def flaky(ctx: StepContext) -> StepResult:
        calls.append(time.perf_counter())
        if len(calls) <= fails:
            raise TransientStepError("not yet")
        return Done()

    async def undo(ctx: StepContext) -> StepResult:
        return Done()

    defn = SagaDefinition(
        "retry", (Step("flaky", flaky, undo, kind=StepKind.COMPENSATABLE, retry=POLICY),)
    )
    log = MemorySagaLog()
    runner = Runner(log, [defn], RunnerSettings(owner="t", claim=False))
    await runner.start()
    await runner.start_saga(NewSaga("s", "retry", b"{}"))
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()
    rec = await log.get("s")
    assert rec is not None
    intents = [
        t.attempt
        for t in await log.transitions("s")
        if t.step == "flaky" and t.phase is Phase.INTENT
    ]
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    return rec.status, intents, gaps


async def test_a_first_success_makes_one_attempt() -> None:
    status, intents, gaps = await _run(fails=0)
    assert (status, intents, gaps) == (SagaStatus.COMPLETED, [1], [])


async def test_failures_keep_the_budget_and_the_backoff_sequence() -> None:
    status, intents, gaps = await _run(fails=99)
    assert status is SagaStatus.COMPENSATED  # out of attempts before the pivot
    assert intents == [1, 2, 3]  # max_attempts calls, not one more
    # Lower bounds only (a sleep never ends early): the second wait is the doubled one,
    # so tenacity counted the first, tenacity-free attempt as its attempt 1.
    assert gaps[0] >= 0.045
    assert gaps[1] >= 0.095


async def test_a_retry_that_succeeds_completes() -> None:
    status, intents, _ = await _run(fails=1)
    assert (status, intents) == (SagaStatus.COMPLETED, [1, 2])
