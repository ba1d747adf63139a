"""The pure decision core: examples, properties, and a crash-anywhere state machine.

The model below drives a saga the way the runner does (write-ahead intents, outcomes that
become durable with the next commit) against idempotent participants with tombstones, and
crashes at any boundary: everything not yet durable is lost, and the next owner decides
from the durable prefix alone. Whatever the crashes, the saga must end consistent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core import (
    Call,
    CannotChange,
    Compensate,
    Finish,
    Idle,
    Park,
    Phase,
    SagaState,
    SagaStatus,
    StartCompensation,
    Transition,
    cancel,
    decide,
    fold,
    resume,
)
from engine.definition import (
    DefinitionError,
    Done,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)

POLICY = RetryPolicy(max_attempts=3, park_after=5)


async def _noop(ctx: StepContext) -> StepResult:
    return Done()


def make(kinds: list[StepKind], policy: RetryPolicy = POLICY) -> SagaDefinition:
    return SagaDefinition(
        "t",
        tuple(
            Step(
                f"s{i}",
                _noop,
                _noop if k is StepKind.COMPENSATABLE else None,
                k,
                policy,
            )
            for i, k in enumerate(kinds)
        ),
    )


C, P, R = StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE
ORDER = make([C, C, P, R])


def t(step: str, phase: Phase, attempt: int = 1, error: str | None = None) -> Transition:
    return Transition(step, phase, attempt, error)


# ---- definitions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ([C, P, C], "after the pivot"),
        ([C, R], "without a pivot"),
        ([P, P], "at most one pivot"),
        ([], "at least one step"),
    ],
)
def test_invalid_definitions_are_refused(kinds: list[StepKind], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        make(kinds)


def test_step_names_must_be_unique() -> None:
    with pytest.raises(DefinitionError, match="unique"):
        SagaDefinition("t", (Step("a", _noop), Step("a", _noop)))


# ---- decisions by example ----------------------------------------------------------------


def test_a_new_saga_calls_its_first_step() -> None:
    assert decide(ORDER, fold(ORDER, [t("", Phase.CREATED)])) == Call(0, 1)


def test_a_step_in_doubt_is_called_again() -> None:
    log = [t("s0", Phase.INTENT)]
    assert decide(ORDER, fold(ORDER, log)) == Call(0, 2)


def test_all_done_finishes() -> None:
    log = [t(f"s{i}", ph) for i in range(4) for ph in (Phase.INTENT, Phase.DONE)]
    assert decide(ORDER, fold(ORDER, log)) == Finish(SagaStatus.COMPLETED)


def test_a_refusal_before_the_pivot_compensates_lifo() -> None:
    log = [
        t("s0", Phase.INTENT), t("s0", Phase.DONE),
        t("s1", Phase.INTENT), t("s1", Phase.REFUSED, error="out_of_stock"),
    ]  # fmt: skip
    state = fold(ORDER, log)
    assert decide(ORDER, state) == StartCompensation("out_of_stock")
    state = fold(ORDER, [*log, t("", Phase.COMPENSATE, 0, "out_of_stock")])
    assert state.status is SagaStatus.COMPENSATING
    assert decide(ORDER, state) == Compensate(0, 1)  # s1 was refused: nothing to undo


def test_compensation_covers_steps_in_doubt_latest_first() -> None:
    log = [
        t("s0", Phase.INTENT), t("s0", Phase.DONE),
        t("s1", Phase.INTENT), t("s1", Phase.ERROR, error="unavailable"),
        t("", Phase.COMPENSATE, 0, "cancelled_by_operator"),
    ]  # fmt: skip
    assert decide(ORDER, fold(ORDER, log)) == Compensate(1, 1)
    log += [t("s1", Phase.COMP_INTENT), t("s1", Phase.COMP_DONE)]
    assert decide(ORDER, fold(ORDER, log)) == Compensate(0, 1)
    log += [t("s0", Phase.COMP_INTENT), t("s0", Phase.COMP_DONE)]
    assert decide(ORDER, fold(ORDER, log)) == Finish(SagaStatus.COMPENSATED)


def test_cancelled_before_any_step_compensates_only_what_must_always_be() -> None:
    cancelled = [t("", Phase.CREATED), t("", Phase.COMPENSATE, 0, "cancelled_by_operator")]
    assert decide(ORDER, fold(ORDER, cancelled)) == Finish(SagaStatus.COMPENSATED)
    first = replace(ORDER.steps[0], always_compensate=True)
    told = SagaDefinition("t", (first, *ORDER.steps[1:]))
    assert decide(told, fold(told, cancelled)) == Compensate(0, 1)
    log = [*cancelled, t("s0", Phase.COMP_INTENT), t("s0", Phase.COMP_DONE)]
    assert decide(told, fold(told, log)) == Finish(SagaStatus.COMPENSATED)
    refused = [t("s0", Phase.INTENT), t("s0", Phase.REFUSED, error="no")]
    state = fold(told, [*refused, t("", Phase.COMPENSATE, 0, "no")])
    assert decide(told, state) == Finish(SagaStatus.COMPENSATED), "a refusal had no effect"


def test_a_compensatable_step_out_of_attempts_compensates() -> None:
    log = [t("s0", Phase.INTENT, n) for n in (1, 2, 3)]
    assert decide(ORDER, fold(ORDER, log)) == StartCompensation("s0_failed")


def test_the_pivot_out_of_attempts_parks_instead() -> None:
    done = [t(f"s{i}", ph) for i in range(2) for ph in (Phase.INTENT, Phase.DONE)]
    log = done + [t("s2", Phase.INTENT, n) for n in range(1, 6)]
    decision = decide(ORDER, fold(ORDER, log))
    assert isinstance(decision, Park)
    state = fold(ORDER, [*log, t("", Phase.PARKED, 1, decision.reason)])
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert decide(ORDER, state) == Idle()
    resumed = fold(ORDER, [*log, t("", Phase.PARKED, 1, "x"), *resume(state)])
    assert decide(ORDER, resumed) == Call(2, 6), "attempt numbers go on; the budget restarts"


def test_a_refusal_after_the_pivot_parks() -> None:
    log = [t(f"s{i}", ph) for i in range(3) for ph in (Phase.INTENT, Phase.DONE)]
    log += [t("s3", Phase.INTENT), t("s3", Phase.REFUSED, error="no")]
    assert isinstance(decide(ORDER, fold(ORDER, log)), Park)


def test_cancel_only_before_the_pivot() -> None:
    early = fold(ORDER, [t("s0", Phase.INTENT), t("s0", Phase.DONE)])
    assert [x.phase for x in cancel(ORDER, early, "cancelled_by_operator")] == [Phase.COMPENSATE]
    late = fold(
        ORDER,
        [t(f"s{i}", ph) for i in range(2) for ph in (Phase.INTENT, Phase.DONE)]
        + [t("s2", Phase.INTENT)],
    )
    with pytest.raises(CannotChange) as info:
        cancel(ORDER, late, "cancelled_by_operator")
    assert info.value.code == "past_pivot"


def test_a_saga_claimed_again_and_again_without_progress_parks() -> None:
    claims = [t("", Phase.CLAIMED, n) for n in range(2, 2 + ORDER.max_stalled_claims)]
    assert decide(ORDER, fold(ORDER, claims)) == Call(0, 1)
    stalled = fold(ORDER, [*claims, t("", Phase.CLAIMED, 99)])
    assert isinstance(decide(ORDER, stalled), Park)
    moved = fold(ORDER, [*claims, t("s0", Phase.INTENT), t("s0", Phase.DONE), *claims])
    assert decide(ORDER, moved) == Call(1, 1), "progress resets the count"


def test_resume_needs_a_parked_saga() -> None:
    with pytest.raises(CannotChange):
        resume(fold(ORDER, []))


# ---- the model: a runner in miniature against idempotent participants --------------------


@dataclass
class Participants:
    refuse: frozenset[str]
    fail: Counter[str]  # transient failures left, before the effect
    lose: Counter[str]  # effects whose response will be lost
    applied: Counter[str] = field(default_factory=Counter)
    undone: set[str] = field(default_factory=set)
    tomb: set[str] = field(default_factory=set)
    answer: dict[str, str] = field(default_factory=dict)

    def act(self, step: str) -> str:
        if self.fail[step] > 0:
            self.fail[step] -= 1
            return "error"
        if step not in self.answer:
            if step in self.tomb or step in self.refuse:
                self.answer[step] = "refused"
            else:
                self.applied[step] += 1
                self.answer[step] = "done"
        if self.lose[step] > 0:
            self.lose[step] -= 1
            return "error"
        return self.answer[step]

    def undo(self, step: str) -> str:
        if self.applied[step]:
            self.undone.add(step)
        else:
            self.tomb.add(step)
        return "done"


class Model:
    """Durable log + pending (lost on crash) + participants; one decision per `advance`."""

    def __init__(self, defn: SagaDefinition, world: Participants) -> None:
        self.defn = defn
        self.world = world
        self.durable: list[Transition] = [t("", Phase.CREATED, 1)]
        self.pending: list[Transition] = []
        self.epoch = 1

    def state(self) -> SagaState:
        return fold(self.defn, [*self.durable, *self.pending])

    def commit(self, *ts: Transition) -> None:
        self.durable += [*self.pending, *ts]
        self.pending = []

    def crash(self) -> None:
        self.pending = []
        self.epoch += 1

    def advance(self, crash_after_commit: bool = False, crash_after_call: bool = False) -> bool:
        """One decision; returns False once there is nothing left to do."""
        state = self.state()
        nxt = decide(self.defn, state)
        if isinstance(nxt, Idle):
            if state.parked:
                self.commit(*resume(state))
                return True
            return False
        if isinstance(nxt, Finish):
            phase = Phase.COMPLETED if nxt.status is SagaStatus.COMPLETED else Phase.COMPENSATED
            self.commit(t("", phase, self.epoch))
            return True
        if isinstance(nxt, Park):
            self.commit(t("", Phase.PARKED, self.epoch, nxt.reason))
            return True
        if isinstance(nxt, StartCompensation):
            self.pending.append(t("", Phase.COMPENSATE, 0, nxt.reason))
            return True
        step = self.defn.steps[nxt.step].name
        comp = isinstance(nxt, Compensate)
        self.commit(t(step, Phase.COMP_INTENT if comp else Phase.INTENT, nxt.attempt))
        if crash_after_commit:
            self.crash()
            return True
        answer = self.world.undo(step) if comp else self.world.act(step)
        if crash_after_call:
            self.crash()
            return True
        phase = {
            ("done", False): Phase.DONE,
            ("refused", False): Phase.REFUSED,
            ("error", False): Phase.ERROR,
            ("done", True): Phase.COMP_DONE,
            ("error", True): Phase.COMP_ERROR,
        }[(answer, comp)]
        self.pending.append(t(step, phase, nxt.attempt, None if answer == "done" else answer))
        return True

    def check(self) -> None:
        state = self.state()
        assert state.finished is not None, state
        for step, n in self.world.applied.items():
            assert n <= 1, f"{step} applied {n} times"
        for s in self.defn.steps:
            in_place = self.world.applied[s.name] > 0 and s.name not in self.world.undone
            if state.finished is SagaStatus.COMPLETED:
                assert in_place, f"completed but {s.name} is not in place"
            elif s.compensation is not None:
                assert not in_place, f"compensated but {s.name} is left in place"
            else:
                assert not in_place, f"compensated but {s.name} (no compensation) applied"


shapes = st.sampled_from([[C], [C, C], [P], [C, P], [C, C, P, R], [C, P, R, R], [P, R], [C, C, C]])


@st.composite
def worlds(draw: st.DrawFn, defn: SagaDefinition) -> Participants:
    names = [s.name for s in defn.steps]
    refusable = [s.name for s in defn.steps if s.kind is not StepKind.RETRIABLE]
    return Participants(
        refuse=frozenset(draw(st.sets(st.sampled_from(refusable))) if refusable else set()),
        fail=Counter({n: draw(st.integers(0, 6)) for n in names}),
        lose=Counter({n: draw(st.integers(0, 2)) for n in names}),
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kinds=shapes)
def test_any_crashes_end_consistent(data: st.DataObject, kinds: list[StepKind]) -> None:
    defn = make(kinds)
    model = Model(defn, data.draw(worlds(defn)))
    for _ in range(500):
        crash = data.draw(st.sampled_from(["none", "none", "none", "commit", "call"]))
        if not model.advance(crash == "commit", crash == "call"):
            break
    model.check()


class CrashAnywhere(RuleBasedStateMachine):
    """Crashes at any point of any saga: the next owner folds the durable prefix alone."""

    @initialize(data=st.data(), kinds=shapes)
    def setup(self, data: st.DataObject, kinds: list[StepKind]) -> None:
        self.model = Model(make(kinds), data.draw(worlds(make(kinds))))
        self.idle = False

    @rule()
    def advance(self) -> None:
        self.idle = not self.model.advance()

    @rule()
    def crash_after_intent(self) -> None:
        self.idle = not self.model.advance(crash_after_commit=True)

    @rule()
    def crash_after_call(self) -> None:
        self.idle = not self.model.advance(crash_after_call=True)

    @rule()
    def crash_now(self) -> None:
        self.model.crash()

    @rule()
    def operator_cancels(self) -> None:
        # The change sees only the durable log; the owner it fences loses what is pending.
        try:
            changes = cancel(self.model.defn, fold(self.model.defn, self.model.durable), "op")
        except CannotChange:
            return
        self.model.crash()
        self.model.commit(*changes)

    @invariant()
    def never_applied_twice(self) -> None:
        if hasattr(self, "model"):
            assert all(n <= 1 for n in self.model.world.applied.values())

    def teardown(self) -> None:
        if not hasattr(self, "model"):
            return
        for _ in range(500):  # no more crashes: the saga must reach a consistent end
            if not self.model.advance():
                break
        self.model.check()


CrashAnywhere.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_crash_anywhere = CrashAnywhere.TestCase
