"""The in-memory twin of the saga log: the same contract as `SqliteSagaLog`, nothing on
disk. For unit tests of the runner and for benchmarks (the cost of durability is the
difference between the two). It keeps state in one process only, so it is never used by
a deployed process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from engine.clock import HostClock
from engine.core import ACTIVE_STATUSES, Phase, SagaStatus, Transition
from engine.saga_log import (
    INDEXED_PAYLOAD_FIELDS,
    ChangeFn,
    CreateResult,
    MinuteCounts,
    NewSaga,
    PruneBatch,
    Pruned,
    SagaFilter,
    SagaNotFound,
    SagaPage,
    SagaRecord,
    StaleEpoch,
    Takeover,
    decode_cursor,
    encode_cursor,
    minute_of,
    payload_field,
    replay,
)

__all__ = ["MemorySagaLog"]


@dataclass(slots=True)
class _Entry:
    seq: int
    record: SagaRecord
    log: list[Transition] = field(default_factory=list)


class MemorySagaLog:
    """`SagaLog` in a dict. Every method completes without awaiting, so each is atomic
    with respect to other coroutines on the loop, like one SQLite transaction.

    Like the SQLite log's indexes, `_active` holds only the unfinished sagas, in creation
    order, so that claims, queue depth and lease renewals cost what is in flight, not
    the whole history: the end-to-end benchmark's in-memory baseline would otherwise
    slow down with every saga it finished (a claim scanned and sorted them all)."""

    def __init__(self) -> None:
        self.clock = HostClock.starting_now()  # one process: its own timeline will do
        self._by_id: dict[str, _Entry] = {}  # creation order, as `seq`
        self._by_key: dict[str, str] = {}
        self._active: dict[str, _Entry] = {}  # RUNNING or COMPENSATING, in `seq` order
        self._next_seq = 1

    def _track(self, entry: _Entry) -> None:
        """Keep `_active` in step with the entry's status (after every change of it)."""
        sid = entry.record.id
        if entry.record.status not in ACTIVE_STATUSES:
            self._active.pop(sid, None)
            return
        if sid in self._active:
            return
        newest = next(reversed(self._active.values()), None)
        self._active[sid] = entry
        if newest is not None and newest.seq > entry.seq:  # an old saga active again
            self._active = dict(sorted(self._active.items(), key=lambda kv: kv[1].seq))

    def _append(self, entry: _Entry, ts: Sequence[Transition], now_ms: int) -> None:
        seen = {(t.step, t.phase, t.attempt) for t in entry.log}
        for t in ts:
            fact = (t.step, t.phase, t.attempt)
            if fact in seen:  # the SQLite log's unique key: a fact is recorded once
                raise ValueError(f"duplicate transition {fact} for saga {entry.record.id}")
            seen.add(fact)
            entry.log.append(
                replace(
                    t,
                    seq=len(entry.log) + 1,
                    at_ms=t.at_ms or now_ms,
                    # As the SQLite log: no trace of its own, the saga's.
                    trace_id=t.trace_id or entry.record.trace_id,
                )
            )

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        key = new.idempotency_key
        existing = None if key is None else await self.get_by_key(key)
        if existing is not None:
            return replay(existing, new)
        if new.id in self._by_id:
            raise ValueError(f"saga id {new.id} already exists")
        record = SagaRecord(
            id=new.id,
            definition=new.definition,
            status=SagaStatus.RUNNING,
            payload=new.payload,
            idempotency_key=new.idempotency_key,
            payload_digest=new.digest,
            owner=owner,
            lease_expires_ms=lease_expires_ms if owner is not None else 0,
            epoch=1,
            trace_id=new.trace_id,
            reason=None,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        entry = _Entry(self._next_seq, record)
        self._next_seq += 1
        self._append(entry, [Transition("", Phase.CREATED, 1, None, new.trace_id), *first], now_ms)
        self._by_id[new.id] = entry
        self._track(entry)
        if new.idempotency_key is not None:
            self._by_key[new.idempotency_key] = new.id
        return CreateResult(record, created=True)

    def _entry(self, saga_id: str) -> _Entry:
        entry = self._by_id.get(saga_id)
        if entry is None:
            raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
        return entry

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
        entry = self._entry(saga_id)
        if entry.record.epoch != epoch:
            raise StaleEpoch(
                f"saga {saga_id} is at epoch {entry.record.epoch}, the writer holds {epoch}",
                saga_id=saga_id,
            )
        self._append(entry, transitions, now_ms)
        entry.record = replace(entry.record, status=status, reason=reason, updated_ms=now_ms)
        self._track(entry)

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        taken: list[Takeover] = []
        for entry in list(self._active.values()):
            if len(taken) >= limit:
                break
            rec = entry.record
            if rec.status not in ACTIVE_STATUSES or rec.lease_expires_ms >= now_ms:
                continue
            epoch = rec.epoch + 1
            self._append(entry, [Transition("", Phase.CLAIMED, epoch, f"by {owner}")], now_ms)
            entry.record = replace(
                rec,
                owner=owner,
                epoch=epoch,
                lease_expires_ms=lease_expires_ms,
                updated_ms=now_ms,
            )
            taken.append(Takeover(entry.record, tuple(entry.log)))
        return taken

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        entry = self._entry(saga_id)
        change = fn(entry.record, tuple(entry.log))
        self._append(entry, change.transitions, now_ms)
        entry.record = replace(
            entry.record,
            owner=None,
            lease_expires_ms=0,
            epoch=entry.record.epoch + 1,
            status=change.status,
            reason=change.reason,
            updated_ms=now_ms,
        )
        self._track(entry)
        return entry.record

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        n = 0
        for entry in self._active.values():
            if entry.record.owner == owner:
                entry.record = replace(entry.record, lease_expires_ms=lease_expires_ms)
                n += 1
        return n

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        wanted = None if saga_ids is None else set(saga_ids)
        n = 0
        for entry in self._active.values():
            rec = entry.record
            if rec.owner != owner:
                continue
            if wanted is not None and rec.id not in wanted:
                continue
            entry.record = replace(rec, owner=None, lease_expires_ms=0)
            n += 1
        return n

    async def get(self, saga_id: str) -> SagaRecord | None:
        entry = self._by_id.get(saga_id)
        return None if entry is None else entry.record

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        saga_id = self._by_key.get(idempotency_key)
        return None if saga_id is None else self._by_id[saga_id].record

    async def transitions(self, saga_id: str) -> list[Transition]:
        entry = self._by_id.get(saga_id)
        return [] if entry is None else list(entry.log)

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        before = None if cursor is None else decode_cursor(cursor)
        matches: list[_Entry] = []
        for entry in reversed(self._by_id.values()):  # newest first
            rec = entry.record
            if before is not None and entry.seq >= before:
                continue
            if flt.definition is not None and rec.definition != flt.definition:
                continue
            if flt.statuses and rec.status not in flt.statuses:
                continue
            if flt.created_after_ms is not None and rec.created_ms < flt.created_after_ms:
                continue
            if flt.created_before_ms is not None and rec.created_ms >= flt.created_before_ms:
                continue
            matches.append(entry)
            if len(matches) > limit:
                break
        more = len(matches) > limit
        page = matches[:limit]
        return SagaPage(
            tuple(e.record for e in page), encode_cursor(page[-1].seq) if more and page else None
        )

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        if field not in INDEXED_PAYLOAD_FIELDS:
            raise ValueError(f"payload field {field!r} has no index: not searchable")
        before = None if cursor is None else decode_cursor(cursor)
        matches: list[_Entry] = []
        for entry in reversed(self._by_id.values()):  # newest first
            if before is not None and entry.seq >= before:
                continue
            if payload_field(entry.record.payload, field) != value:
                continue
            matches.append(entry)
            if len(matches) > limit:
                break
        page = matches[:limit]
        more = len(matches) > limit and page
        return SagaPage(
            tuple(e.record for e in page), encode_cursor(page[-1].seq) if more else None
        )

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        after = 0 if cursor is None else decode_cursor(cursor)
        batch = PruneBatch(finished_before_ms)
        examined, last = 0, after
        for entry in self._by_id.values():  # creation order
            if entry.seq <= after:
                continue
            examined, last = examined + 1, entry.seq
            rec = entry.record
            final = entry.log[-1].phase if entry.log else None
            if batch.wants(rec.created_ms, rec.status, rec.updated_ms, final):
                batch.pruned(max(0, len(entry.log) - 1))
                if not dry_run:
                    del entry.log[:-1]
            if examined == limit:
                break
        return batch.result(examined, limit, encode_cursor(last))

    async def count_claimable(self, *, now_ms: int) -> int:
        return sum(1 for e in self._active.values() if e.record.lease_expires_ms < now_ms)

    async def oldest_unfinished_ms(self) -> int | None:
        return min((e.record.created_ms for e in self._active.values()), default=None)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        counts = dict.fromkeys(SagaStatus, 0)
        for e in self._by_id.values():
            counts[e.record.status] += 1
        return counts

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        # A scan, where the SQLite log keeps counts: this twin serves tests and benchmarks.
        counts: dict[int, MinuteCounts] = {}
        since = minute_of(since_ms)

        def bump(ms: int, **by: int) -> None:
            minute = minute_of(ms)
            if minute >= since:
                c = counts.get(minute, MinuteCounts(minute))
                counts[minute] = replace(c, **{k: getattr(c, k) + v for k, v in by.items()})

        for e in self._by_id.values():
            rec = e.record
            bump(rec.created_ms, created=1)
            if rec.status is SagaStatus.COMPLETED:
                bump(rec.updated_ms, completed=1)
            elif rec.status is SagaStatus.COMPENSATED:
                bump(rec.updated_ms, compensated=1)
        return [counts[m] for m in sorted(counts)]

    async def close(self) -> None:
        return None
