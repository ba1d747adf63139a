"""The saga log's port: the narrow interface the runner, the gateway, the recovery daemon
and the operator tools use, whatever stores it (SQLite here, an in-memory twin for tests
and benchmarks, PostgreSQL one day). tests/contract/test_log_contract.py runs one suite
against every adapter.

Ownership is part of the log: a saga has an owner, a lease expiry and an epoch. Claiming
bumps the epoch; every append names the epoch its writer holds, and an append with a stale
epoch is refused (`StaleEpoch`), so a paused owner that lost its lease cannot write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from engine.clock import Clock
from engine.core import Phase, SagaStatus, Transition
from engine.errors import EngineError, StaleEpoch

__all__ = [
    "INDEXED_PAYLOAD_FIELDS",
    "MINUTE_MS",
    "Change",
    "ChangeFn",
    "CreateResult",
    "IdempotencyKeyReused",
    "InvalidCursor",
    "MinuteCounts",
    "NewSaga",
    "PruneBatch",
    "Pruned",
    "SagaFilter",
    "SagaLog",
    "SagaNotFound",
    "SagaPage",
    "SagaRecord",
    "StaleEpoch",
    "Takeover",
    "decode_cursor",
    "encode_cursor",
    "minute_of",
    "payload_digest",
    "payload_field",
    "pruned_before",
]


class SagaNotFound(EngineError):
    code = "saga_not_found"


class InvalidCursor(EngineError):
    code = "invalid_cursor"


class IdempotencyKeyReused(EngineError):
    """The key exists for a saga with a different payload."""

    code = "idempotency_key_reused"


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def encode_cursor(seq: int) -> str:
    """SagaPage cursors are opaque to callers; adapters encode their creation order in them."""
    return f"s{seq}"


def decode_cursor(cursor: str) -> int:
    if cursor.startswith("s") and cursor[1:].isdigit() and len(cursor) < 20:
        return int(cursor[1:])
    raise InvalidCursor(f"invalid cursor {cursor!r}: use the next_cursor of a previous page")


@dataclass(frozen=True, slots=True)
class NewSaga:
    id: str
    definition: str
    payload: bytes
    idempotency_key: str | None = None
    trace_id: str | None = None

    @property
    def digest(self) -> str:
        return payload_digest(self.payload)


@dataclass(frozen=True, slots=True)
class SagaRecord:
    id: str
    definition: str
    status: SagaStatus
    payload: bytes
    idempotency_key: str | None
    payload_digest: str
    owner: str | None
    lease_expires_ms: int
    epoch: int
    trace_id: str | None
    reason: str | None  # why it compensated or parked
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class CreateResult:
    record: SagaRecord
    created: bool  # False: the idempotency key already named this saga (a replay)


def replay(existing: SagaRecord, new: NewSaga) -> CreateResult:
    """`new` again, whose idempotency key already names `existing`: that saga, if the
    request is the same; IdempotencyKeyReused if it is not. One rule for every adapter."""
    if existing.payload_digest != new.digest:
        raise IdempotencyKeyReused(
            "this idempotency key was used with a different request", saga_id=existing.id
        )
    return CreateResult(existing, created=False)


@dataclass(frozen=True, slots=True)
class Takeover:
    """A saga claimed by a new owner, with its log so far (to fold)."""

    record: SagaRecord
    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class SagaFilter:
    definition: str | None = None
    statuses: tuple[SagaStatus, ...] = ()
    created_after_ms: int | None = None
    created_before_ms: int | None = None


# Top-level fields of a JSON-object payload that `list_by_payload_field` finds through an
# index (the SQLite adapter's migrations make one per field). The order domain's customer:
# what an operator searches by when a customer calls about "my order".
INDEXED_PAYLOAD_FIELDS: Final = frozenset({"customer_id"})


def payload_field(payload: bytes, field: str) -> object:
    """`field` of a JSON-object payload; None when the payload is not one or lacks it."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc.get(field) if isinstance(doc, dict) else None


MINUTE_MS: Final = 60_000


def minute_of(ms: int) -> int:
    """The start of the minute `ms` falls in (ms since the epoch)."""
    return ms // MINUTE_MS * MINUTE_MS


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """What happened in one minute: sagas created, and sagas that finished, by how."""

    minute_ms: int  # the minute's start, ms since the epoch
    created: int = 0
    completed: int = 0
    compensated: int = 0


@dataclass(frozen=True, slots=True)
class SagaPage:
    items: tuple[SagaRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Pruned:
    """One batch of `prune_history`."""

    examined: int  # sagas looked at, whatever their status
    sagas: int  # of those, how many had history to prune (or would, on a dry run)
    transitions: int  # transitions deleted (or that would be)
    next_cursor: str | None  # continue after these; None: nothing older is left to look at


@dataclass(slots=True)
class PruneBatch:
    """One batch of `prune_history` as an adapter scans it in creation order: which sagas
    it prunes and whether the scan goes on. One rule for every adapter."""

    finished_before_ms: int
    sagas: int = 0
    transitions: int = 0
    done: bool = False

    def wants(
        self, created_ms: int, status: SagaStatus, updated_ms: int, last: Phase | None
    ) -> bool:
        """Whether to prune this saga, given its record and the phase of its last
        transition (the one pruning keeps)."""
        if created_ms >= self.finished_before_ms:
            # Created after the cutoff, so it cannot have finished before it, and neither
            # can any saga created later: the scan ends. (Several writers' clocks may
            # disagree by a little; a saga missed so is pruned by a later run.)
            self.done = True
        return (
            not self.done
            and status.finished
            and updated_ms < self.finished_before_ms
            # Only a log that ends in its finish: the kept transition alone must still
            # fold to "finished", or a decision on the saga could change.
            and last in (Phase.COMPLETED, Phase.COMPENSATED)
        )

    def pruned(self, transitions: int) -> None:
        if transitions:
            self.sagas += 1
            self.transitions += transitions

    def result(self, examined: int, limit: int, last: str) -> Pruned:
        more = not self.done and examined == limit
        return Pruned(examined, self.sagas, self.transitions, last if more else None)


def pruned_before(transitions: Sequence[Transition]) -> int | None:
    """The seq of the first transition `prune_history` kept, when it pruned this log: every
    saga's log starts with CREATED, and a pruned one keeps only its final transition."""
    if transitions and transitions[0].phase is not Phase.CREATED:
        return transitions[0].seq
    return None


@dataclass(frozen=True, slots=True)
class Change:
    """What an operator's change appends, and the saga's status and reason after it."""

    transitions: tuple[Transition, ...]
    status: SagaStatus
    reason: str | None


# Given the saga and its log, the change to apply (or an EngineError to refuse it).
ChangeFn = Callable[[SagaRecord, Sequence[Transition]], Change]


class SagaLog(Protocol):
    """The durable saga log. Every transition it records carries a trace id: its own (a
    step attempt's), else the saga's, so that a saga's whole history, claims and
    operators' changes included, is found under the one trace it was created in.

    Times (`now_ms`, `lease_expires_ms`) are read from the log's own `clock`, the one
    timeline every process sharing the log agrees on (engine/clock.py)."""

    @property
    def clock(self) -> Clock: ...

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        """Make a saga durable with its CREATED transition, owned by `owner` at epoch 1.

        `owner=None` queues it for any runner with spare capacity (lease_expires_ms is then
        ignored). An existing idempotency key returns that saga (`created=False`) when the
        payload is the same, and raises IdempotencyKeyReused when it differs.

        `first`: transitions that follow CREATED in the same commit, written only if the
        saga is created here (the runner's intent of its first step: one commit, not two).
        """
        ...

    async def append(
        self,
        saga_id: str,
        epoch: int,
        transitions: Sequence[Transition],
        *,
        status: SagaStatus,
        reason: str | None,
        now_ms: int,
    ) -> None:
        """Durably append transitions and set the saga's status, iff `epoch` is current.

        Raises StaleEpoch otherwise (nothing is written) and SagaNotFound for no such saga.
        """
        ...

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        """Claim up to `limit` unfinished sagas that nobody owns or whose lease expired,
        oldest first: one transaction, epoch bumped, a CLAIMED transition each."""
        ...

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        """An operator's change: in one transaction, read the saga and its log, append what
        `fn` returns, bump the epoch (fencing whoever drives it now) and leave the saga
        unowned so that a runner claims it at once. `fn` raising aborts everything.
        SagaNotFound when there is no such saga."""
        ...

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        """Extend every lease `owner` holds on unfinished sagas, in one statement."""
        ...

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        """Give up `owner`'s claim (all of them, or those listed) so others claim at once."""
        ...

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        """Compact the history of up to `limit` sagas that finished (COMPLETED, COMPENSATED)
        and were last changed before `finished_before_ms`, oldest first, in one transaction:
        every transition but the last, the one that finished the saga, is deleted. The
        saga's record stays whole (status, reason, input, idempotency key, trace id), so its
        order reads and replays as before, and the fold of the kept transition still says
        how it finished: no decision (cancel, retry, claim) can change. `cursor` continues
        after a previous batch; `dry_run` counts and deletes nothing."""
        ...

    async def get(self, saga_id: str) -> SagaRecord | None: ...

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        """The saga this idempotency key made, if any (a read: works when writes fail)."""
        ...

    async def transitions(self, saga_id: str) -> list[Transition]: ...

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        """Newest first; `cursor` continues a previous page (InvalidCursor if garbled)."""
        ...

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        """Sagas whose JSON-object payload has `field` equal to `value`, newest first, paged
        like `list_sagas`. Only `INDEXED_PAYLOAD_FIELDS` (ValueError otherwise): a search
        reads an index, never the whole log."""
        ...

    async def count_by_status(self) -> dict[SagaStatus, int]: ...

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        """Sagas created and sagas finished (COMPLETED, COMPENSATED, counted in the minute
        of their last change) per minute, from the minute of `since_ms` on, oldest first;
        a minute with nothing is left out. Kept as the log changes, so the last hour is
        sixty rows to read whatever the size of the log."""
        ...

    async def count_claimable(self, *, now_ms: int) -> int:
        """Unfinished sagas nobody holds a live lease on (the durable queue's depth)."""
        ...

    async def oldest_unfinished_ms(self) -> int | None:
        """Creation time of the oldest RUNNING/COMPENSATING saga, if any."""
        ...

    async def close(self) -> None: ...
