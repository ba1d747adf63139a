"""One saga as the explorer shows it, computed purely from its record and its log: the
steps of its definition with where each stands, its history as a timeline (one bar per
attempt, compensations as the way back, each change of owner marked), and what a retry or
a cancel would do now. The engine's own pure core decides (`fold`, `cancel`, `resume`,
`decide`), so the page's promise is the admin route's answer (unless the saga moves in
between)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from engine.core import (
    Call,
    CannotChange,
    Compensate,
    CompStatus,
    Finish,
    Park,
    Phase,
    SagaState,
    StartCompensation,
    StepStatus,
    Transition,
    cancel,
    decide,
    fold,
    resume,
)
from engine.definition import SagaDefinition, StepKind
from engine.errors import EngineError
from engine.operations import CANCELLED_BY_OPERATOR
from engine.saga_log import SagaRecord

__all__ = [
    "SCALE",
    "Action",
    "Attempt",
    "Event",
    "Outcome",
    "StepView",
    "Timeline",
    "action_preview",
    "human_duration",
    "next_text",
    "step_views",
    "timeline",
]

# Width of the timeline's coordinate space: a bar's x and width are in 0 … SCALE.
SCALE: Final = 1000.0
_MIN_WIDTH: Final = 3.0


def human_duration(ms: int) -> str:
    """Short and exact enough to read at a glance: 850ms, 4.2s, 3m05s, 2h10m, 3d04h."""
    ms = max(ms, 0)
    if ms < 1_000:
        return f"{ms}ms"
    if ms < 10_000:
        return f"{ms / 1000:.1f}s"
    s = ms // 1000
    if s < 3600:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


class Outcome(StrEnum):
    DONE = "done"
    REFUSED = "refused"
    ERROR = "error"  # failed transiently; retried
    IN_FLIGHT = "in flight"  # its owner is calling now
    LOST = "in doubt"  # its owner was replaced before it recorded an outcome


_ENDS: Final = {
    Phase.DONE: Outcome.DONE,
    Phase.REFUSED: Outcome.REFUSED,
    Phase.ERROR: Outcome.ERROR,
    Phase.COMP_DONE: Outcome.DONE,
    Phase.COMP_ERROR: Outcome.ERROR,
}


@dataclass(slots=True)
class Attempt:
    """One call to a participant: a bar of the timeline."""

    step: str
    compensation: bool
    number: int
    start_ms: int
    epoch: int
    owner: str | None
    pivot: bool
    end_ms: int | None = None
    outcome: Outcome = Outcome.IN_FLIGHT
    error: str | None = None
    x: float = 0.0
    width: float = 0.0

    @property
    def duration_ms(self) -> int | None:
        return None if self.end_ms is None else self.end_ms - self.start_ms

    @property
    def kind(self) -> str:
        return "attempt"


@dataclass(slots=True)
class Event:
    """Something that is not a call: created, claimed (a change of owner), turned back,
    parked, resumed, finished."""

    at_ms: int
    phase: Phase
    text: str
    epoch: int
    owner: str | None = None
    recovery: bool = False  # a claim that took the saga from another owner
    x: float = 0.0

    @property
    def kind(self) -> str:
        return "event"


@dataclass(frozen=True, slots=True)
class Timeline:
    rows: tuple[Attempt | Event, ...]
    start_ms: int
    end_ms: int
    owners: tuple[str, ...]  # every owner seen, in order
    recoveries: int

    @property
    def span_ms(self) -> int:
        return self.end_ms - self.start_ms


def _claimed_by(t: Transition) -> str | None:
    text = t.error or ""
    return text[3:] if text.startswith("by ") else (text or None)


def _event_text(t: Transition) -> str:
    match t.phase:
        case Phase.CREATED:
            return "created"
        case Phase.COMPENSATE:
            return f"turned back: {t.error or 'no reason given'}"
        case Phase.PARKED:
            return f"parked: {t.error or 'no reason given'}"
        case Phase.RESUMED:
            return t.error or "resumed"
        case Phase.COMPLETED:
            return "completed"
        case Phase.COMPENSATED:
            return "compensated: every effect undone"
    return t.phase.value


def timeline(
    record: SagaRecord,
    transitions: Sequence[Transition],
    definition: SagaDefinition | None,
    now_ms: int,
) -> Timeline:
    """The saga's log as rows in time order, with each bar placed on one axis from the
    first transition to the last (or to now, while something is in flight)."""
    pivots = {s.name for s in definition.steps if s.kind is StepKind.PIVOT} if definition else set()
    rows: list[Attempt | Event] = []
    open_: dict[tuple[str, bool, int], Attempt] = {}
    epoch, owner = 1, None
    owners: list[str] = []
    recoveries = 0
    driven = False  # someone drove the saga since it was last left unowned
    previous: Transition | None = None
    for t in transitions:
        comp = t.phase in (Phase.COMP_INTENT, Phase.COMP_DONE, Phase.COMP_ERROR)
        key = (t.step, comp, t.attempt)
        if t.phase in (Phase.INTENT, Phase.COMP_INTENT):
            bar = Attempt(t.step, comp, t.attempt, t.at_ms, epoch, owner, t.step in pivots)
            open_[key] = bar
            rows.append(bar)
            driven = True
        elif t.phase in _ENDS:
            started = open_.pop(key, None)
            if started is None:  # its intent was pruned: a bar of no length
                started = Attempt(t.step, comp, t.attempt, t.at_ms, epoch, owner, t.step in pivots)
                rows.append(started)
            started.end_ms, started.outcome, started.error = t.at_ms, _ENDS[t.phase], t.error
        elif t.phase is Phase.CLAIMED:
            new_owner = _claimed_by(t)
            for bar in open_.values():  # the previous owner never said how these went
                bar.end_ms, bar.outcome = t.at_ms, Outcome.LOST
            open_.clear()
            epoch = t.attempt or epoch + 1
            text = f"claimed by {new_owner or 'an unnamed owner'}, epoch {epoch}"
            if driven:  # taken from an owner that stopped (or was slower than its lease)
                recoveries += 1
                text = f"recovery: {text}" + (f", from {owner}" if owner else "")
            rows.append(Event(t.at_ms, t.phase, text, epoch, new_owner, recovery=driven))
            owner, driven = new_owner, True
            if new_owner is not None and new_owner not in owners:
                owners.append(new_owner)
        else:
            text = _event_text(t)
            if t.phase is Phase.RESUMED or (
                t.phase is Phase.COMPENSATE and t.error == CANCELLED_BY_OPERATOR
            ):
                # An operator's change: one transaction that bumps the epoch (fencing
                # whoever drove it) and leaves the saga unowned; a cancel of a parked
                # saga writes two transitions in it.
                same_change = (
                    previous is not None
                    and previous.at_ms == t.at_ms
                    and (previous.phase in (Phase.COMPENSATE, Phase.RESUMED))
                )
                if not same_change:
                    epoch += 1
                owner, driven = None, False
                text += f" (operator's change: epoch {epoch}, unowned)"
            rows.append(Event(t.at_ms, t.phase, text, epoch, owner))
        previous = t
    start = transitions[0].at_ms if transitions else record.created_ms
    end = max([t.at_ms for t in transitions] or [record.updated_ms])
    if open_ and not record.status.finished:
        end = max(end, now_ms)  # a call in flight: the axis runs to now
    end = max(end, start + 1)
    _place(rows, start, end, now_ms)
    return Timeline(tuple(rows), start, end, tuple(owners), recoveries)


def _place(rows: Sequence[Attempt | Event], start: int, end: int, now_ms: int) -> None:
    span = end - start
    for row in rows:
        if isinstance(row, Attempt):
            stop = row.end_ms if row.end_ms is not None else max(now_ms, row.start_ms)
            row.x = (row.start_ms - start) / span * SCALE
            row.width = max((min(stop, end) - row.start_ms) / span * SCALE, _MIN_WIDTH)
            row.x = min(row.x, SCALE - row.width)
        else:
            row.x = min((row.at_ms - start) / span * SCALE, SCALE - 1)


# ---- the definition's steps, and where each stands ---------------------------------------


@dataclass(frozen=True, slots=True)
class StepView:
    name: str
    kind: StepKind
    status: StepStatus
    attempts: int
    compensation: CompStatus
    comp_attempts: int
    error: str | None

    @property
    def pivot(self) -> bool:
        return self.kind is StepKind.PIVOT


def _state(
    definition: SagaDefinition | None, transitions: Sequence[Transition]
) -> SagaState | None:
    if definition is None:
        return None
    try:
        return fold(definition, transitions)
    except EngineError:  # a log this program's definition cannot read
        return None


def step_views(
    definition: SagaDefinition | None, transitions: Sequence[Transition]
) -> tuple[StepView, ...]:
    state = _state(definition, transitions)
    if definition is None or state is None:
        return ()
    return tuple(
        StepView(step.name, step.kind, s.status, s.attempts, s.comp, s.comp_attempts, s.error)
        for step, s in zip(definition.steps, state.steps, strict=True)
    )


def next_text(definition: SagaDefinition | None, transitions: Sequence[Transition]) -> str:
    """What the engine would do next, as `decide(fold(log))` says."""
    state = _state(definition, transitions)
    if definition is None or state is None:
        return "unknown: this gateway cannot read the saga's log"
    match decide(definition, state):
        case Call(step=i, attempt=n):
            return f"call {definition.steps[i].name} (attempt {n})"
        case Compensate(step=i, attempt=n):
            return f"undo {definition.steps[i].name} (attempt {n})"
        case StartCompensation(reason=reason):
            return f"start compensating ({reason})"
        case Park(reason=reason):
            return f"park it for an operator: {reason}"
        case Finish(status=status):
            return f"finish {status.value}"
    if state.finished is not None:
        return f"nothing: it ended {state.finished.value}"
    return "nothing until an operator retries or cancels it"


# ---- what an operator's action would do -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """Retry or cancel as the page offers it: whether the engine would accept it now, and
    the sentence the confirmation shows (what will happen, or why not)."""

    verb: str
    allowed: bool
    text: str


def action_preview(
    verb: str, definition: SagaDefinition | None, transitions: Sequence[Transition]
) -> Action:
    state = _state(definition, transitions)
    if definition is None or state is None:
        return Action(verb, False, "this gateway cannot read the saga's log, so it cannot act")
    try:
        if verb == "retry":
            resumed = [*transitions, *resume(state)]
            return Action(
                verb,
                True,
                "The saga gets fresh attempt budgets and a runner claims it at once; "
                f"next it will {next_text(definition, resumed)}.",
            )
        cancel(definition, state, CANCELLED_BY_OPERATOR)
    except CannotChange as exc:
        return Action(verb, False, f"Refused ({exc.code}): {exc.message}.")
    undo = [
        step.name
        for step, s in reversed(list(zip(definition.steps, state.steps, strict=True)))
        if step.compensation is not None
        and (s.may_have_effect or (s.status is StepStatus.PENDING and step.always_compensate))
    ]
    what = ", then ".join(f"undo {name}" for name in undo) or "nothing to undo"
    return Action(
        verb,
        True,
        "The saga turns back before its pivot: it will "
        f"{what}; the order ends CANCELLED with reason {CANCELLED_BY_OPERATOR}.",
    )
