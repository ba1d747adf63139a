"""What the operator commands decide and show, as pure functions: the user's filters and
durations parsed, a saga's row and timeline, what the engine would do next, whether a
retry or cancel would apply, and the summary of a bulk change.

No I/O and no clock: the commands read the log, pass `now_ms` in and print what comes
back, so every answer here is a unit test. The engine's own pure core decides (`fold`,
`decide`, `cancel`, `resume`); nothing here re-implements its rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from engine.config import DURATION_HINT, duration_ms
from engine.core import (
    ACTIVE_STATUSES,
    Call,
    CannotChange,
    Compensate,
    Finish,
    Idle,
    Park,
    SagaState,
    SagaStatus,
    StartCompensation,
    Transition,
    cancel,
    decide,
    fold,
    resume,
)
from engine.definition import SagaDefinition
from engine.errors import EngineError
from engine.operations import CANCELLED_BY_OPERATOR
from engine.saga_log import SagaFilter, SagaRecord, pruned_before
from saga.errors import OpsInputError

__all__ = [
    "Json",
    "ListedSaga",
    "NextAction",
    "NextStep",
    "Outcome",
    "OutcomeKind",
    "SagaView",
    "Summary",
    "TimelineEntry",
    "Verb",
    "build_filter",
    "driver_note",
    "human_duration",
    "parse_duration_ms",
    "parse_statuses",
    "preview",
    "rfc3339",
    "saga_view",
    "summarize",
    "what_next",
]

Json = dict[str, object]


# ---- parsing the operator's input -------------------------------------------------------


def parse_duration_ms(text: str, *, option: str) -> int:
    """A human duration ("5m", "1h30m", "2d", "1.5h") in milliseconds. A bare number is
    refused: seconds or minutes would be a guess, and a guess here cancels sagas."""
    ms = duration_ms(text)
    if ms is None:
        raise OpsInputError(f"{option} {text!r}: {DURATION_HINT}")
    return ms


def parse_statuses(values: Sequence[str]) -> tuple[SagaStatus, ...]:
    """`--status` values, case-insensitive, each at most once, in the order given."""
    out: list[SagaStatus] = []
    for value in values:
        try:
            status = SagaStatus(value.strip().upper())
        except ValueError:
            known = ", ".join(s.value for s in SagaStatus)
            raise OpsInputError(f"--status {value!r}: unknown status; one of {known}") from None
        if status not in out:
            out.append(status)
    return tuple(out)


def build_filter(
    *,
    statuses: Sequence[str],
    older_than: str | None,
    newer_than: str | None,
    definition: str | None,
    now_ms: int,
) -> SagaFilter:
    """The log's filter for the operator's flags. Age is counted from a saga's creation."""
    before = (
        None
        if older_than is None
        else now_ms - parse_duration_ms(older_than, option="--older-than")
    )
    after = (
        None
        if newer_than is None
        else now_ms - parse_duration_ms(newer_than, option="--newer-than")
    )
    if before is not None and after is not None and after >= before:
        raise OpsInputError(
            f"--newer-than {newer_than} and --older-than {older_than} select nothing: "
            "the newer-than age must be the larger one"
        )
    return SagaFilter(
        definition=definition or None,
        statuses=parse_statuses(statuses),
        created_after_ms=after,
        created_before_ms=before,
    )


# ---- times ------------------------------------------------------------------------------


def rfc3339(ms: int) -> str:
    """UTC, millisecond precision: 2025-11-25T18:00:00.123Z."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def human_duration(ms: int) -> str:
    """Short and exact enough to read at a glance: 850ms, 4.2s, 3m05s, 2h10m, 3d04h."""
    ms = max(ms, 0)
    if ms < 1_000:
        return f"{ms}ms"
    if ms < 10_000:
        return f"{ms / 1000:.1f}s"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


# ---- one saga ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedSaga:
    """A saga as `saga ls` lists it."""

    id: str
    status: SagaStatus
    definition: str
    created_ms: int
    updated_ms: int
    age_ms: int
    epoch: int
    owner: str | None
    lease_expires_ms: int
    reason: str | None
    trace_id: str | None

    @classmethod
    def of(cls, record: SagaRecord, now_ms: int) -> ListedSaga:
        return cls(
            id=record.id,
            status=record.status,
            definition=record.definition,
            created_ms=record.created_ms,
            updated_ms=record.updated_ms,
            age_ms=max(0, now_ms - record.created_ms),
            epoch=record.epoch,
            owner=record.owner,
            lease_expires_ms=record.lease_expires_ms,
            reason=record.reason,
            trace_id=record.trace_id,
        )

    def lease_live(self, now_ms: int) -> bool:
        """Someone holds the saga right now (only an unfinished saga is driven by a lease)."""
        return (
            self.owner is not None
            and self.status in ACTIVE_STATUSES
            and self.lease_expires_ms >= now_ms
        )

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "status": self.status.value,
            "definition": self.definition,
            "created_at": rfc3339(self.created_ms),
            "updated_at": rfc3339(self.updated_ms),
            "age_ms": self.age_ms,
            "epoch": self.epoch,
            "owner": self.owner,
            "lease_expires_at": rfc3339(self.lease_expires_ms) if self.lease_expires_ms else None,
            "reason": self.reason,
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    seq: int
    at_ms: int
    since_previous_ms: int | None  # None for the first entry
    step: str
    phase: str
    attempt: int
    error: str | None  # for claims, parks and resumes: who or why
    trace_id: str | None

    def to_json(self) -> Json:
        return {
            "seq": self.seq,
            "at": rfc3339(self.at_ms),
            "since_previous_ms": self.since_previous_ms,
            "step": self.step,
            "phase": self.phase,
            "attempt": self.attempt,
            "error": self.error,
            "trace_id": self.trace_id,
        }


def timeline(transitions: Sequence[Transition]) -> tuple[TimelineEntry, ...]:
    entries: list[TimelineEntry] = []
    previous: int | None = None
    for t in transitions:
        entries.append(
            TimelineEntry(
                seq=t.seq,
                at_ms=t.at_ms,
                since_previous_ms=None if previous is None else t.at_ms - previous,
                step=t.step,
                phase=t.phase.value,
                attempt=t.attempt,
                error=t.error,
                trace_id=t.trace_id,
            )
        )
        previous = t.at_ms
    return tuple(entries)


class NextAction(StrEnum):
    CALL = "call"
    COMPENSATE = "compensate"
    START_COMPENSATION = "start_compensation"
    PARK = "park"
    FINISH = "finish"
    NOTHING = "nothing"
    UNKNOWN = "unknown"  # this program cannot fold the saga's log


@dataclass(frozen=True, slots=True)
class NextStep:
    """What the engine would do next with the saga, as `decide(fold(log))` says."""

    action: NextAction
    text: str
    step: str | None = None
    attempt: int | None = None

    def to_json(self) -> Json:
        return {
            "action": self.action.value,
            "step": self.step,
            "attempt": self.attempt,
            "text": self.text,
        }


def _fold(
    record: SagaRecord,
    transitions: Sequence[Transition],
    definitions: Mapping[str, SagaDefinition],
) -> tuple[SagaDefinition, SagaState]:
    defn = definitions.get(record.definition)
    if defn is None:
        raise EngineError(f"definition {record.definition!r} is not known to this program")
    return defn, fold(defn, transitions)


def what_next(
    record: SagaRecord,
    transitions: Sequence[Transition],
    definitions: Mapping[str, SagaDefinition],
) -> NextStep:
    try:
        defn, state = _fold(record, transitions, definitions)
    except EngineError as exc:
        return NextStep(NextAction.UNKNOWN, f"unknown: cannot fold this log ({exc.message})")
    match decide(defn, state):
        case Call(step=i, attempt=n):
            name = defn.steps[i].name
            return NextStep(NextAction.CALL, f"call {name} (attempt {n})", name, n)
        case Compensate(step=i, attempt=n):
            name = defn.steps[i].name
            return NextStep(NextAction.COMPENSATE, f"compensate {name} (attempt {n})", name, n)
        case StartCompensation(reason=reason):
            return NextStep(NextAction.START_COMPENSATION, f"start compensating ({reason})")
        case Park(reason=reason):
            return NextStep(NextAction.PARK, f"park it for an operator: {reason}")
        case Finish(status=status):
            return NextStep(NextAction.FINISH, f"finish {status.value}")
        case Idle():
            pass
    if state.finished is not None:
        return NextStep(NextAction.NOTHING, f"nothing: it ended {state.finished.value}")
    hint = f"saga retry {record.id}"
    if not state.past_pivot:
        hint += f", or saga cancel {record.id}"
    return NextStep(NextAction.NOTHING, f"nothing: parked, needs an operator ({hint})")


def driver_note(row: ListedSaga, now_ms: int) -> str:
    """Who would take the next step: the owner while its lease lives, else the next runner."""
    if row.status not in ACTIVE_STATUSES:
        return ""
    if row.lease_live(now_ms):
        return f"{row.owner} (lease until {rfc3339(row.lease_expires_ms)})"
    return "the next gateway or recovery daemon to claim it"


@dataclass(frozen=True, slots=True)
class SagaView:
    """Everything `saga show` prints about one saga."""

    row: ListedSaga
    entries: tuple[TimelineEntry, ...]
    next: NextStep
    driver: str
    now_ms: int
    pruned_before: int | None  # `saga prune` deleted the transitions before this seq

    def to_json(self) -> Json:
        return {
            **self.row.to_json(),
            "lease_live": self.row.lease_live(self.now_ms),
            "next": {**self.next.to_json(), "by": self.driver or None},
            "history_pruned": self.pruned_before is not None,
            "steps": [e.to_json() for e in self.entries],
        }


def saga_view(
    record: SagaRecord,
    transitions: Sequence[Transition],
    definitions: Mapping[str, SagaDefinition],
    now_ms: int,
) -> SagaView:
    row = ListedSaga.of(record, now_ms)
    return SagaView(
        row=row,
        entries=timeline(transitions),
        next=what_next(record, transitions, definitions),
        driver=driver_note(row, now_ms),
        now_ms=now_ms,
        pruned_before=pruned_before(transitions),
    )


# ---- operators' changes -----------------------------------------------------------------


class Verb(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"

    @property
    def past(self) -> str:
        return "retried" if self is Verb.RETRY else "cancelled"

    @property
    def ing(self) -> str:
        return "retrying" if self is Verb.RETRY else "cancelling"


def preview(
    verb: Verb,
    record: SagaRecord,
    transitions: Sequence[Transition],
    definitions: Mapping[str, SagaDefinition],
) -> CannotChange | None:
    """Would the change apply now? The engine's own pure decision on the saga's log, so a
    dry run answers exactly what the real run would (unless the saga moves meanwhile)."""
    try:
        defn, state = _fold(record, transitions, definitions)
    except EngineError as exc:
        return CannotChange("unreadable", exc.message, saga_id=record.id)
    try:
        if verb is Verb.RETRY:
            resume(state)
        else:
            cancel(defn, state, CANCELLED_BY_OPERATOR)
    except CannotChange as exc:
        return exc
    return None


class OutcomeKind(StrEnum):
    DONE = "done"
    REFUSED = "refused"  # the engine said the saga's state does not allow it
    FAILED = "failed"  # it could not be tried (storage, unknown definition, vanished)


@dataclass(frozen=True, slots=True)
class Outcome:
    saga_id: str
    kind: OutcomeKind
    code: str = ""
    message: str = ""
    status: SagaStatus | None = None  # after the change, when done

    @classmethod
    def of_error(cls, saga_id: str, exc: EngineError) -> Outcome:
        kind = OutcomeKind.REFUSED if isinstance(exc, CannotChange) else OutcomeKind.FAILED
        return cls(saga_id, kind, exc.code, exc.message)


@dataclass(frozen=True, slots=True)
class Summary:
    done: tuple[str, ...]
    # (kind, code, message, sagas): one group per distinct answer, so each message is true
    # of every saga listed with it
    problems: tuple[tuple[OutcomeKind, str, str, tuple[str, ...]], ...]

    def count(self, kind: OutcomeKind) -> int:
        if kind is OutcomeKind.DONE:
            return len(self.done)
        return sum(len(ids) for k, _, _, ids in self.problems if k is kind)


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    groups: dict[tuple[OutcomeKind, str, str], list[str]] = {}
    for o in outcomes:
        if o.kind is not OutcomeKind.DONE:
            groups.setdefault((o.kind, o.code, o.message), []).append(o.saga_id)
    return Summary(
        done=tuple(o.saga_id for o in outcomes if o.kind is OutcomeKind.DONE),
        problems=tuple((k, c, m, tuple(ids)) for (k, c, m), ids in sorted(groups.items())),
    )
