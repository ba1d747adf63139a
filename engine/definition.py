"""Saga definitions: an ordered list of steps, validated when built.

A step has an action, an optional compensation, a retry policy, a per-attempt timeout and
a kind. Steps before the pivot are compensatable; the pivot is the point of no return;
steps after it are retriable (driven forward until they succeed). Nothing here knows what
the steps do: the order saga is a definition that lives with its user, the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from engine.errors import EngineError

__all__ = [
    "Action",
    "DefinitionError",
    "Done",
    "Refused",
    "RetryPolicy",
    "SagaDefinition",
    "Step",
    "StepContext",
    "StepKind",
    "StepResult",
]


class DefinitionError(EngineError):
    code = "invalid_definition"


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one step is retried on transient failures (tenacity does the waiting).

    `max_attempts` bounds a compensatable step: past it the saga compensates. A pivot, a
    retriable step, or a compensation cannot give up that way; they keep going and the
    saga is parked as NEEDS_ATTENTION after `park_after` failed attempts.
    """

    max_attempts: int = 5
    park_after: int = 25
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.park_after < 1:
            raise DefinitionError("max_attempts and park_after must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise DefinitionError("backoff must satisfy 0 <= initial <= max")


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an action or compensation is told. `reason` is set while compensating."""

    saga_id: str
    payload: bytes
    epoch: int
    attempt: int
    step: str
    trace_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The participant did it (or had already done it: participants are idempotent)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The participant said no for a business reason; retrying will not change it."""

    reason: str


StepResult = Done | Refused
Action = Callable[[StepContext], Awaitable[StepResult]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    action: Action
    compensation: Action | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 5.0
    # The saga's reason when this step gives up before the pivot (transient failures
    # past max_attempts), e.g. "inventory_unavailable". Default: "<name>_failed".
    exhausted_reason: str = ""
    # Compensate this step even when its action never ran, i.e. when the saga is cancelled
    # before it started. For a step whose compensation also records the saga's end with a
    # participant (cancelling an order creates it first, so the Order service knows the
    # order the client was promised ended CANCELLED). It must be safe without the action.
    always_compensate: bool = False

    @property
    def give_up_reason(self) -> str:
        return self.exhausted_reason or f"{self.name}_failed"

    @property
    def attempt_budget(self) -> int:
        """Attempts before the engine stops calling this step (compensate or park)."""
        if self.kind is StepKind.COMPENSATABLE:
            return self.retry.max_attempts
        return self.retry.park_after


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    name: str
    steps: tuple[Step, ...]
    # Park a saga claimed this many times in a row without any step moving.
    max_stalled_claims: int = 16
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise DefinitionError("a saga definition needs a name")
        if not self.steps:
            raise DefinitionError(f"{self.name}: a saga needs at least one step")
        names = [s.name for s in self.steps]
        if any(not n for n in names):
            raise DefinitionError(f"{self.name}: every step needs a name")
        if len(set(names)) != len(names):
            raise DefinitionError(f"{self.name}: step names must be unique: {names}")
        pivots = [i for i, s in enumerate(self.steps) if s.kind is StepKind.PIVOT]
        if len(pivots) > 1:
            raise DefinitionError(f"{self.name}: at most one pivot step")
        seen_forward_only = False
        for step in self.steps:
            if step.kind is StepKind.COMPENSATABLE and seen_forward_only:
                raise DefinitionError(
                    f"{self.name}: compensatable step {step.name!r} after the pivot"
                )
            if step.kind is StepKind.RETRIABLE and not pivots:
                raise DefinitionError(
                    f"{self.name}: retriable step {step.name!r} without a pivot before it"
                )
            if step.kind is not StepKind.COMPENSATABLE:
                seen_forward_only = True
            if step.timeout_s <= 0:
                raise DefinitionError(f"{self.name}: step {step.name!r} needs a timeout > 0")
        if pivots and any(s.kind is StepKind.RETRIABLE for s in self.steps[: pivots[0]]):
            raise DefinitionError(f"{self.name}: retriable steps come after the pivot")
        object.__setattr__(self, "index", {s.name: i for i, s in enumerate(self.steps)})

    def step(self, name: str) -> Step:
        return self.steps[self.index[name]]
