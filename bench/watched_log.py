"""A saga log that watches the saga path while passing every call through.

The runner only talks to its log, so the log is where a benchmark can see, without any
hook in the engine, what the engine made durable and when:
- how many transitions it wrote (the CREATED row, every intent, outcome and status);
- each step's overhead: from the moment the runner asked the log to write the step's
  intent to the moment its outcome was durable, minus the time the step's own action
  took (reported by the action through `action_took`);
- when each saga's terminal status is durable (`finished`), so a driver can keep exactly
  N sagas in flight.

Its own cost (a clock read and a dict operation per append) is paid equally by every
backend it wraps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

from engine.core import Phase, SagaStatus, Transition
from engine.saga_log import (
    ChangeFn,
    CreateResult,
    MinuteCounts,
    NewSaga,
    Pruned,
    SagaFilter,
    SagaLog,
    SagaPage,
    SagaRecord,
    Takeover,
)

__all__ = ["WatchedLog"]

_OUTCOMES: Final = frozenset({Phase.DONE, Phase.REFUSED, Phase.ERROR})
_TERMINAL: Final = frozenset(
    {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.NEEDS_ATTENTION}
)

_Key = tuple[str, str, int]  # (saga id, step, attempt)


class WatchedLog:
    """`SagaLog` around another one; see the module's docstring for what it records."""

    def __init__(self, inner: SagaLog) -> None:
        self.inner = inner
        self.clock = inner.clock
        self.written = 0  # transitions made durable
        self.overheads: list[float] = []  # seconds, one per step attempt with an outcome
        self._intent_at: dict[_Key, float] = {}
        self._own: dict[_Key, float] = {}
        self._finished: dict[str, asyncio.Future[SagaStatus]] = {}

    # ---- what the benchmark asks -------------------------------------------------------

    def action_took(self, saga_id: str, step: str, attempt: int, seconds: float) -> None:
        self._own[(saga_id, step, attempt)] = seconds

    def finished(self, saga_id: str) -> asyncio.Future[SagaStatus]:
        """Resolves with the saga's terminal status once it is durable (at once if it is).
        Each saga's future is handed out once: it is forgotten here when taken."""
        fut = self._finished.pop(saga_id, None)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._finished[saga_id] = fut
        return fut

    def _terminal(self, saga_id: str, status: SagaStatus) -> None:
        fut = self._finished.get(saga_id)
        if fut is None:  # nobody waits yet: leave the answer for `finished`
            fut = asyncio.get_running_loop().create_future()
            self._finished[saga_id] = fut
        elif fut.done():
            return
        else:  # the waiter already holds it; drop our reference
            del self._finished[saga_id]
        fut.set_result(status)

    # ---- the saga path, watched --------------------------------------------------------

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        result = await self.inner.create(
            new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
        )
        if result.created:
            self.written += 1 + len(first)  # CREATED and what came with it
        return result

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
        called = time.perf_counter()
        for t in transitions:
            if t.phase is Phase.INTENT:
                self._intent_at[(saga_id, t.step, t.attempt)] = called
        await self.inner.append(
            saga_id, epoch, transitions, status=status, reason=reason, now_ms=now_ms
        )
        durable = time.perf_counter()
        self.written += len(transitions)
        for t in transitions:
            if t.phase in _OUTCOMES:
                key = (saga_id, t.step, t.attempt)
                intent_at = self._intent_at.pop(key, None)
                if intent_at is not None:
                    self.overheads.append(durable - intent_at - self._own.pop(key, 0.0))
        if status in _TERMINAL:
            self._terminal(saga_id, status)

    # ---- everything else, passed through -----------------------------------------------

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        return await self.inner.claim(
            owner, limit=limit, now_ms=now_ms, lease_expires_ms=lease_expires_ms
        )

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        return await self.inner.change(saga_id, fn, now_ms=now_ms, actor=actor)

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        return await self.inner.renew(owner, lease_expires_ms=lease_expires_ms)

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        return await self.inner.release(owner, saga_ids)

    async def get(self, saga_id: str) -> SagaRecord | None:
        return await self.inner.get(saga_id)

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        return await self.inner.get_by_key(idempotency_key)

    async def transitions(self, saga_id: str) -> list[Transition]:
        return await self.inner.transitions(saga_id)

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return await self.inner.list_sagas(flt, limit=limit, cursor=cursor)

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return await self.inner.list_by_payload_field(field, value, limit=limit, cursor=cursor)

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        return await self.inner.prune_history(
            finished_before_ms=finished_before_ms, limit=limit, cursor=cursor, dry_run=dry_run
        )

    async def count_by_status(self) -> dict[SagaStatus, int]:
        return await self.inner.count_by_status()

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        return await self.inner.count_per_minute(since_ms=since_ms)

    async def count_claimable(self, *, now_ms: int) -> int:
        return await self.inner.count_claimable(now_ms=now_ms)

    async def oldest_unfinished_ms(self) -> int | None:
        return await self.inner.oldest_unfinished_ms()

    async def close(self) -> None:
        await self.inner.close()
