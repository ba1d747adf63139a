"""The pure decision core: a saga's state is a fold over its log, and one function of that
state decides what happens next. No I/O, no clock, no randomness, so every crash point is
a unit test: whatever prefix of the log survived, `decide(fold(prefix))` is the way on.

The rules, in order of precedence:
- A finished or parked saga does nothing (an operator's RESUMED un-parks it); one claimed
  over and over without moving is parked.
- Going forward, the first step not yet done is called again, whether it never ran or its
  outcome is unknown (intent logged, no outcome): participants are idempotent per
  (order, operation), so re-issuing is safe and returns the first answer.
- A step that says no (REFUSED) before or at the pivot starts compensation; after the
  pivot nothing can be undone, so a refusal there parks the saga for a human.
- A compensatable step that used up its attempts starts compensation; the pivot and later
  steps never give up that way (once the pivot's intent is logged the saga only goes
  forward): they park after `park_after` attempts.
- Compensation runs in LIFO order over every step that may have had an effect (done, or
  in doubt), never over one that was refused; the participants' tombstones make
  compensating an action that never arrived safe. A step marked `always_compensate` is
  compensated even if it never ran (an operator cancelled the saga before it started):
  its compensation is what tells a participant how the saga ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from engine.definition import SagaDefinition, StepKind
from engine.errors import EngineError

__all__ = [
    "Call",
    "CannotChange",
    "Compensate",
    "Finish",
    "Idle",
    "Next",
    "Park",
    "Phase",
    "SagaState",
    "SagaStatus",
    "StartCompensation",
    "StepState",
    "StepStatus",
    "Transition",
    "cancel",
    "decide",
    "evolve",
    "fold",
    "initial_state",
    "record_reason",
    "resume",
]


class Phase(StrEnum):
    CREATED = "created"
    CLAIMED = "claimed"
    INTENT = "intent"  # a step's call is about to be made (write-ahead)
    DONE = "done"
    REFUSED = "refused"  # a business "no"; error holds the reason
    ERROR = "error"  # a transient failure; the outcome is unknown
    COMPENSATE = "compensate"  # the saga turns back; error holds the reason
    COMP_INTENT = "comp_intent"
    COMP_DONE = "comp_done"
    COMP_ERROR = "comp_error"
    PARKED = "parked"  # NEEDS_ATTENTION; error says why
    RESUMED = "resumed"  # an operator's retry: attempt budgets start again
    COMPLETED = "completed"
    COMPENSATED = "compensated"


class SagaStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"

    @property
    def finished(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


ACTIVE_STATUSES = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


@dataclass(frozen=True, slots=True)
class Transition:
    """One durable fact of a saga's log. The fold reads step, phase and error only."""

    step: str
    phase: Phase
    attempt: int = 0
    error: str | None = None
    trace_id: str | None = None
    at_ms: int = 0
    seq: int = 0


class StepStatus(StrEnum):
    PENDING = "pending"  # never attempted
    IN_DOUBT = "in_doubt"  # attempted, outcome unknown
    DONE = "done"
    REFUSED = "refused"


class CompStatus(StrEnum):
    NONE = "none"
    IN_DOUBT = "in_doubt"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StepState:
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0  # intents ever logged: the next attempt is numbered attempts + 1
    comp: CompStatus = CompStatus.NONE
    comp_attempts: int = 0
    error: str | None = None
    # attempts and comp_attempts when an operator last resumed: budgets count from there
    attempts_base: int = 0
    comp_attempts_base: int = 0

    @property
    def spent(self) -> int:
        return self.attempts - self.attempts_base

    @property
    def comp_spent(self) -> int:
        return self.comp_attempts - self.comp_attempts_base

    @property
    def may_have_effect(self) -> bool:
        return self.status in (StepStatus.DONE, StepStatus.IN_DOUBT)


@dataclass(frozen=True, slots=True)
class SagaState:
    steps: tuple[StepState, ...]
    compensating: bool = False
    reason: str | None = None  # why the saga compensates (a business reason)
    parked: bool = False
    park_reason: str | None = None
    finished: SagaStatus | None = None
    past_pivot: bool = False  # a pivot or retriable step's intent is logged
    # Claims since the saga last moved: a saga whose every owner dies before it makes
    # progress (a poison payload, say) is parked instead of claimed for ever.
    stalled_claims: int = 0

    @property
    def status(self) -> SagaStatus:
        if self.finished is not None:
            return self.finished
        if self.parked:
            return SagaStatus.NEEDS_ATTENTION
        if self.compensating:
            return SagaStatus.COMPENSATING
        return SagaStatus.RUNNING


class UnknownStep(EngineError):
    code = "unknown_step"


def initial_state(defn: SagaDefinition) -> SagaState:
    return SagaState(steps=tuple(StepState() for _ in defn.steps))


def _with_step(state: SagaState, i: int, step: StepState) -> SagaState:
    steps = list(state.steps)
    steps[i] = step
    return replace(state, steps=tuple(steps))


_PROGRESS = frozenset({Phase.DONE, Phase.REFUSED, Phase.COMPENSATE, Phase.COMP_DONE, Phase.RESUMED})


def evolve(defn: SagaDefinition, state: SagaState, t: Transition) -> SagaState:
    """The one mutator: the state after one more transition."""
    phase = t.phase
    if phase is Phase.CLAIMED:
        return replace(state, stalled_claims=state.stalled_claims + 1)
    if phase in _PROGRESS and state.stalled_claims:
        state = replace(state, stalled_claims=0)
    if phase is Phase.CREATED:
        return state
    if phase is Phase.COMPENSATE:
        return replace(state, compensating=True, reason=t.error)
    if phase is Phase.PARKED:
        return replace(state, parked=True, park_reason=t.error)
    if phase is Phase.RESUMED:
        fresh = tuple(
            replace(s, attempts_base=s.attempts, comp_attempts_base=s.comp_attempts)
            for s in state.steps
        )
        return replace(state, steps=fresh, parked=False, park_reason=None)
    if phase is Phase.COMPLETED:
        return replace(state, finished=SagaStatus.COMPLETED)
    if phase is Phase.COMPENSATED:
        return replace(state, finished=SagaStatus.COMPENSATED)

    i = defn.index.get(t.step)
    if i is None:
        raise UnknownStep(f"the log names step {t.step!r}, unknown to {defn.name!r}")
    s = state.steps[i]
    if phase is Phase.INTENT:
        if s.status is StepStatus.DONE:
            return state
        state = _with_step(
            state, i, replace(s, status=StepStatus.IN_DOUBT, attempts=s.attempts + 1)
        )
        if defn.steps[i].kind is not StepKind.COMPENSATABLE:
            state = replace(state, past_pivot=True)
        return state
    if phase is Phase.DONE:
        return _with_step(state, i, replace(s, status=StepStatus.DONE, error=None))
    if phase is Phase.REFUSED:
        return _with_step(state, i, replace(s, status=StepStatus.REFUSED, error=t.error))
    if phase is Phase.ERROR:
        return _with_step(state, i, replace(s, error=t.error))
    if phase is Phase.COMP_INTENT:
        if s.comp is CompStatus.DONE:
            return state
        return _with_step(
            state, i, replace(s, comp=CompStatus.IN_DOUBT, comp_attempts=s.comp_attempts + 1)
        )
    if phase is Phase.COMP_DONE:
        return _with_step(state, i, replace(s, comp=CompStatus.DONE, error=None))
    # COMP_ERROR
    return _with_step(state, i, replace(s, error=t.error))


def fold(defn: SagaDefinition, transitions: Iterable[Transition]) -> SagaState:
    state = initial_state(defn)
    for t in transitions:
        state = evolve(defn, state, t)
    return state


# ---- what to do next -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    step: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Compensate:
    step: int
    attempt: int


@dataclass(frozen=True, slots=True)
class StartCompensation:
    reason: str


@dataclass(frozen=True, slots=True)
class Park:
    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    status: SagaStatus


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do: finished, or parked until an operator acts."""


Next = Call | Compensate | StartCompensation | Park | Finish | Idle


def decide(defn: SagaDefinition, state: SagaState) -> Next:
    if state.finished is not None or state.parked:
        return Idle()
    if state.stalled_claims > defn.max_stalled_claims:
        return Park(f"claimed {state.stalled_claims} times without progress")
    if state.compensating:
        return _next_compensation(defn, state)
    for i, (step, s) in enumerate(zip(defn.steps, state.steps, strict=True)):
        if s.status is StepStatus.DONE:
            continue
        if s.status is StepStatus.REFUSED:
            reason = s.error or f"{step.name}_refused"
            if step.kind is StepKind.RETRIABLE:
                return Park(f"{step.name} refused after the pivot: {reason}")
            return StartCompensation(reason)
        if s.spent >= step.attempt_budget:
            if step.kind is StepKind.COMPENSATABLE:
                return StartCompensation(step.give_up_reason)
            return Park(f"{step.name}: {s.spent} attempts failed (last: {s.error})")
        return Call(i, s.attempts + 1)
    return Finish(SagaStatus.COMPLETED)


def _next_compensation(defn: SagaDefinition, state: SagaState) -> Next:
    for i in range(len(defn.steps) - 1, -1, -1):
        step, s = defn.steps[i], state.steps[i]
        if step.compensation is None or s.comp is CompStatus.DONE:
            continue
        never_ran = s.status is StepStatus.PENDING
        if not (s.may_have_effect or (never_ran and step.always_compensate)):
            continue
        if s.comp_spent >= step.retry.park_after:
            return Park(
                f"compensating {step.name}: {s.comp_spent} attempts failed (last: {s.error})"
            )
        return Compensate(i, s.comp_attempts + 1)
    return Finish(SagaStatus.COMPENSATED)


# ---- operators' changes, decided purely and applied atomically by the log ---------------


class CannotChange(EngineError):
    """An operator's change does not apply to the saga in its current state."""

    code = "conflict"

    def __init__(self, code: str, message: str, *, saga_id: str | None = None) -> None:
        super().__init__(message, saga_id=saga_id)
        self.code = code


def cancel(defn: SagaDefinition, state: SagaState, reason: str) -> Sequence[Transition]:
    """Turn a saga back before its pivot. After the pivot's intent it is refused."""
    if state.finished is not None:
        raise CannotChange("saga_finished", f"the saga already ended {state.finished.value}")
    if state.past_pivot:
        raise CannotChange("past_pivot", "the saga is past its pivot: it can only go forward now")
    if state.compensating:
        raise CannotChange("already_compensating", "the saga is already compensating")
    changes = [Transition("", Phase.COMPENSATE, error=reason)]
    if state.parked:
        changes.append(Transition("", Phase.RESUMED, error="cancelled by operator"))
    return changes


def record_reason(state: SagaState) -> str | None:
    """The reason the log shows beside the status: why it parked, else why it turned back."""
    return state.park_reason if state.parked else state.reason


def resume(state: SagaState, note: str = "resumed by operator") -> Sequence[Transition]:
    """Un-park a NEEDS_ATTENTION saga; its attempt budgets start again."""
    if not state.parked:
        raise CannotChange(
            "not_parked", f"only a NEEDS_ATTENTION saga can be retried (it is {state.status})"
        )
    return [Transition("", Phase.RESUMED, error=note)]
