"""The saga log's group commit on PostgreSQL: creates and appends that callers queue while
a transaction is in flight are written together by the next one, one array statement for
all its creates and one for all its appends (engine/pg_log_schema.py), each saga fenced on
its own epoch. A caller hears its outcome only after the COMMIT: its value, or the error
it alone met (StaleEpoch, SagaNotFound, IdempotencyKeyReused). Under load this divides the
commits, and the client CPU of round trips, by the size of the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import asyncpg

from engine.core import Phase, SagaStatus, Transition
from engine.errors import CommitOutcomeUnknown, EngineError, StorageError, StorageFault
from engine.pg import statement, transaction
from engine.pg.outage import Outage
from engine.pg.pool import Conn
from engine.pg_log_schema import APPEND, COLUMNS, CREATE
from engine.saga_log import (
    CreateResult,
    NewSaga,
    SagaNotFound,
    SagaRecord,
    StaleEpoch,
    payload_field,
    replay,
)
from engine.sqlite import BatchStats

__all__ = ["GroupCommit", "record", "transition"]

MAX_BATCH: Final = 512
log = logging.getLogger(__name__)


def record(row: asyncpg.Record) -> SagaRecord:
    return SagaRecord(
        id=row["id"],
        definition=row["definition"],
        status=SagaStatus(row["status"]),
        payload=bytes(row["payload"]),
        idempotency_key=row["idempotency_key"],
        payload_digest=row["payload_digest"],
        owner=row["owner"],
        lease_expires_ms=int(row["lease_expires_ms"]),
        epoch=int(row["epoch"]),
        trace_id=row["trace_id"],
        reason=row["reason"],
        created_ms=int(row["created_ms"]),
        updated_ms=int(row["updated_ms"]),
    )


def transition(row: asyncpg.Record) -> Transition:
    return Transition(
        step=row["step"],
        phase=Phase(row["phase"]),
        attempt=int(row["attempt"]),
        error=row["error"],
        trace_id=row["trace_id"],
        at_ms=int(row["at_ms"]),
        seq=int(row["n"]),
    )


@dataclass(slots=True)
class _Create:
    new: NewSaga
    owner: str | None
    lease_expires_ms: int
    now_ms: int
    first: tuple[Transition, ...]  # written after CREATED, if created (SagaLog.create)
    waiter: asyncio.Future[CreateResult]

    @property
    def keys(self) -> tuple[str, ...]:
        key = self.new.idempotency_key
        return (f"id:{self.new.id}",) if key is None else (f"id:{self.new.id}", f"key:{key}")


@dataclass(slots=True)
class _Append:
    saga_id: str
    epoch: int
    transitions: Sequence[Transition]
    status: SagaStatus
    reason: str | None
    now_ms: int
    waiter: asyncio.Future[None]

    @property
    def keys(self) -> tuple[str, ...]:
        return (f"id:{self.saga_id}",)


_Op = _Create | _Append
# An op's outcome: its value, or the error it alone met (StaleEpoch, IdempotencyKeyReused).
_Outcome = tuple[bool, object]


@dataclass(slots=True)
class GroupCommit:
    pool: asyncpg.Pool
    where: str
    on_batch: Callable[[BatchStats], None] | None
    outage: Outage | None = None
    pending: list[_Op] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    closed: bool = False

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        waiter: asyncio.Future[CreateResult] = asyncio.get_running_loop().create_future()
        self._submit(_Create(new, owner, lease_expires_ms, now_ms, tuple(first), waiter))
        return await waiter

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
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Append(saga_id, epoch, tuple(transitions), status, reason, now_ms, waiter))
        await waiter

    def _submit(self, op: _Op) -> None:
        if self.closed:
            raise StorageError(
                StorageFault.IO, f"{self.where}: the saga log is closed", path=self.where
            )
        self.pending.append(op)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="pg-saga-log-commit")

    async def close(self) -> None:
        self.closed = True
        self.wake.set()
        if self.task is not None:
            await self.task

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch = self._take()
                if not batch:
                    continue
                try:
                    await self._commit(batch)
                except Exception as exc:  # a bug: its callers hear of it, later ones go on
                    log.exception("saga log group commit failed")
                    for op in batch:
                        _settle(op, (False, exc))
            if self.closed:
                return

    def _take(self) -> list[_Op]:
        """Up to MAX_BATCH live ops, at most one per saga and per idempotency key (a second
        waits for the next batch: one statement cannot fence two appends of one saga)."""
        batch: list[_Op] = []
        rest: list[_Op] = []
        seen: set[str] = set()
        for op in self.pending:
            if op.waiter.cancelled():
                continue
            if len(batch) >= MAX_BATCH or seen.intersection(op.keys):
                rest.append(op)
                continue
            seen.update(op.keys)
            batch.append(op)
        self.pending = rest
        return batch

    async def _commit(self, batch: list[_Op]) -> None:
        started = time.perf_counter()

        async def unit(conn: Conn) -> list[_Outcome]:
            return await _apply(conn, batch)

        # Appends alone are one write statement (APPEND; a read of the refused after it):
        # no BEGIN and COMMIT round trips. Creates may be two writes' worth of work.
        run = statement if all(isinstance(op, _Append) for op in batch) else transaction
        try:
            outcomes = await run(self.pool, unit, where=self.where, outage=self.outage)
        except (StorageError, CommitOutcomeUnknown) as exc:
            for op in batch:
                _settle(op, (False, _fresh(exc)))
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], (False, exc))
                return
            # One op broke the shared statement (a fact recorded twice, a bug): each goes
            # again on its own, so only that one fails.
            for op in batch:
                await self._commit([op])
            return
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(batch), time.perf_counter() - started))
        for op, outcome in zip(batch, outcomes, strict=True):
            _settle(op, outcome)


def _fresh(exc: StorageError | CommitOutcomeUnknown) -> EngineError:
    """A new exception per waiter: one object raised in many tasks would share a traceback."""
    if isinstance(exc, StorageError):
        return StorageError(exc.fault, exc.message, path=exc.path)
    return CommitOutcomeUnknown(exc.message, path=exc.path)


def _settle(op: _Op, outcome: _Outcome) -> None:
    if op.waiter.done():
        return
    ok, value = outcome
    if ok:
        op.waiter.set_result(value)  # type: ignore[arg-type]
    else:
        assert isinstance(value, BaseException)
        op.waiter.set_exception(value)


async def _apply(conn: Conn, batch: list[_Op]) -> list[_Outcome]:
    creates = [op for op in batch if isinstance(op, _Create)]
    appends = [op for op in batch if isinstance(op, _Append)]
    outcomes: dict[int, _Outcome] = {}
    if creates:
        outcomes.update(await _creates(conn, creates))
        # What a create brings with it (SagaLog.create's `first`) follows its CREATED in the
        # same transaction, as a saga's own append at epoch 1, before any other append: a
        # caller appends to a saga only once its create has answered.
        firsts = [op for op in creates if op.first and _made(outcomes[id(op)])]
        if firsts:
            await _firsts(conn, firsts)
    if appends:
        outcomes.update(await _appends(conn, appends))
    return [outcomes[id(op)] for op in batch]


async def _creates(conn: Conn, ops: list[_Create]) -> dict[int, _Outcome]:
    made = {
        r["id"]
        for r in await conn.fetch(
            CREATE,
            [op.new.id for op in ops],
            [op.new.definition for op in ops],
            [op.new.payload for op in ops],
            [op.new.digest for op in ops],
            [op.new.idempotency_key for op in ops],
            [op.owner for op in ops],
            [op.lease_expires_ms if op.owner is not None else 0 for op in ops],
            [op.new.trace_id for op in ops],
            [op.now_ms for op in ops],
            [_customer(op.new.payload) for op in ops],
        )
    }
    replays = [op.new.idempotency_key for op in ops if op.new.id not in made]
    existing: dict[str, SagaRecord] = {}
    if replays:
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM sagas WHERE idempotency_key = ANY($1::text[])", replays
        )
        existing = {r["idempotency_key"]: record(r) for r in rows}
    outcomes: dict[int, _Outcome] = {}
    for op in ops:
        new = op.new
        if new.id in made:
            lease = op.lease_expires_ms if op.owner is not None else 0
            saga = SagaRecord(
                id=new.id,
                definition=new.definition,
                status=SagaStatus.RUNNING,
                payload=new.payload,
                idempotency_key=new.idempotency_key,
                payload_digest=new.digest,
                owner=op.owner,
                lease_expires_ms=lease,
                epoch=1,
                trace_id=new.trace_id,
                reason=None,
                created_ms=op.now_ms,
                updated_ms=op.now_ms,
            )
            outcomes[id(op)] = (True, CreateResult(saga, created=True))
            continue
        found = existing.get(new.idempotency_key or "")
        if found is None:  # only a key's conflict inserts nothing
            outcomes[id(op)] = (False, EngineError(f"saga {new.id} was not created"))
            continue
        try:
            outcomes[id(op)] = (True, replay(found, new))
        except EngineError as exc:
            outcomes[id(op)] = (False, exc)
    return outcomes


def _made(outcome: _Outcome) -> bool:
    ok, value = outcome
    return ok and isinstance(value, CreateResult) and value.created


async def _firsts(conn: Conn, creates: list[_Create]) -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ops = [
        _Append(op.new.id, 1, op.first, SagaStatus.RUNNING, None, op.now_ms, waiter)
        for op in creates
    ]
    for ok, value in (await _appends(conn, ops)).values():
        if not ok:  # cannot happen: each saga was inserted at epoch 1 by this transaction
            assert isinstance(value, BaseException)
            raise value


def _customer(payload: bytes) -> str | None:
    value = payload_field(payload, "customer_id")
    return value if isinstance(value, str) else None


async def _appends(conn: Conn, ops: list[_Append]) -> dict[int, _Outcome]:
    facts = [(op.saga_id, j, t, op.now_ms) for op in ops for j, t in enumerate(op.transitions, 1)]
    written = {
        r["id"]
        for r in await conn.fetch(
            APPEND,
            [op.saga_id for op in ops],
            [op.epoch for op in ops],
            [op.status.value for op in ops],
            [op.reason for op in ops],
            [op.now_ms for op in ops],
            [len(op.transitions) for op in ops],
            [sid for sid, _, _, _ in facts],
            [j for _, j, _, _ in facts],
            [t.step for _, _, t, _ in facts],
            [t.phase.value for _, _, t, _ in facts],
            [t.attempt for _, _, t, _ in facts],
            [t.error for _, _, t, _ in facts],
            [t.trace_id for _, _, t, _ in facts],
            [t.at_ms or now for _, _, t, now in facts],
        )
    }
    refused = [op.saga_id for op in ops if op.saga_id not in written]
    epochs: dict[str, int] = {}
    if refused:
        rows = await conn.fetch("SELECT id, epoch FROM sagas WHERE id = ANY($1::text[])", refused)
        epochs = {r["id"]: int(r["epoch"]) for r in rows}
    outcomes: dict[int, _Outcome] = {}
    for op in ops:
        if op.saga_id in written:
            outcomes[id(op)] = (True, None)
        elif op.saga_id not in epochs:
            outcomes[id(op)] = (False, SagaNotFound(f"no saga {op.saga_id}", saga_id=op.saga_id))
        else:
            current = epochs[op.saga_id]
            outcomes[id(op)] = (
                False,
                StaleEpoch(
                    f"saga {op.saga_id} is at epoch {current}, the writer holds {op.epoch}",
                    saga_id=op.saga_id,
                ),
            )
    return outcomes
