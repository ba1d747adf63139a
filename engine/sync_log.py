"""The saga log for synchronous callers (the operator commands, the audit): any adapter,
opened and driven on an event loop of its own in a helper thread.

An asyncio adapter (PostgreSQL's pool) belongs to the loop it was opened on, while the
operator commands are plain functions that run a coroutine now and then with
`asyncio.run`. `SyncSagaLog` keeps the adapter on its own loop and offers both faces: the
`*_sync` reads the commands use, and the port's coroutines, which forward to that loop
from whatever loop awaits them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Self, TypeVar

from engine.clock import Clock
from engine.core import SagaStatus, Transition
from engine.log_settings import SagaLogSettings, open_saga_log
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

__all__ = ["SyncSagaLog"]

T = TypeVar("T")


class SyncSagaLog:
    """A `SagaLog` on a loop thread of its own, with `*_sync` reads. Open with
    `SyncSagaLog.open(settings)`; close with `close_sync()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self._log: SagaLog | None = None

    @classmethod
    def open(cls, settings: SagaLogSettings, *, create: bool = False) -> Self:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="saga-log-loop", daemon=True)
        thread.start()
        this = cls(loop, thread)
        try:
            opening = open_saga_log(settings, application_name="saga-cli", create=create)
            this._log = this._call(opening)
        except BaseException:
            this._stop()
            raise
        return this

    @property
    def inner(self) -> SagaLog:
        assert self._log is not None
        return self._log

    @property
    def clock(self) -> Clock:
        return self.inner.clock

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _forward(self, coro: Coroutine[object, object, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # ---- synchronous reads (what the commands use) ---------------------------------------

    def get_sync(self, saga_id: str) -> SagaRecord | None:
        return self._call(self.inner.get(saga_id))

    def transitions_sync(self, saga_id: str) -> list[Transition]:
        return self._call(self.inner.transitions(saga_id))

    def list_sagas_sync(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return self._call(self.inner.list_sagas(flt, limit=limit, cursor=cursor))

    def close_sync(self) -> None:
        if self._log is not None:
            try:
                self._call(self._log.close())
            finally:
                self._log = None
                self._stop()

    # ---- the port, forwarded to the log's loop -------------------------------------------

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        return await self._forward(
            self.inner.create(
                new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
            )
        )

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
        await self._forward(
            self.inner.append(
                saga_id, epoch, transitions, status=status, reason=reason, now_ms=now_ms
            )
        )

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        return await self._forward(
            self.inner.claim(owner, limit=limit, now_ms=now_ms, lease_expires_ms=lease_expires_ms)
        )

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        return await self._forward(self.inner.change(saga_id, fn, now_ms=now_ms, actor=actor))

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        return await self._forward(self.inner.renew(owner, lease_expires_ms=lease_expires_ms))

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        return await self._forward(self.inner.release(owner, saga_ids))

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        return await self._forward(
            self.inner.prune_history(
                finished_before_ms=finished_before_ms, limit=limit, cursor=cursor, dry_run=dry_run
            )
        )

    async def get(self, saga_id: str) -> SagaRecord | None:
        return await self._forward(self.inner.get(saga_id))

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        return await self._forward(self.inner.get_by_key(idempotency_key))

    async def transitions(self, saga_id: str) -> list[Transition]:
        return await self._forward(self.inner.transitions(saga_id))

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return await self._forward(self.inner.list_sagas(flt, limit=limit, cursor=cursor))

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return await self._forward(
            self.inner.list_by_payload_field(field, value, limit=limit, cursor=cursor)
        )

    async def count_by_status(self) -> dict[SagaStatus, int]:
        return await self._forward(self.inner.count_by_status())

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        return await self._forward(self.inner.count_per_minute(since_ms=since_ms))

    async def count_claimable(self, *, now_ms: int) -> int:
        return await self._forward(self.inner.count_claimable(now_ms=now_ms))

    async def oldest_unfinished_ms(self) -> int | None:
        return await self._forward(self.inner.oldest_unfinished_ms())

    async def close(self) -> None:
        self.close_sync()
