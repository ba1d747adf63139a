"""History retention: with `SAGA_HISTORY_RETENTION` set, the recovery daemon runs
`saga prune` itself, at start-up and every `SAGA_PRUNE_INTERVAL_S`, so the log stops
growing without a cron job. The pruning is the engine's (engine.operations.prune_history):
records and final transitions stay, so orders read, replay and audit as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.clock import Clock
from engine.errors import EngineError
from engine.operations import prune_history
from engine.saga_log import SagaLog

__all__ = ["Retention"]

log = logging.getLogger("saga.recovery")


class Retention:
    def __init__(
        self,
        saga_log: SagaLog,
        clock: Clock,
        *,
        retention_ms: int,
        every_s: float,
        on_pruned: Callable[[int], None],
    ) -> None:
        self._log = saga_log
        self._clock = clock
        self._retention_ms = retention_ms
        self._every_s = every_s
        self._on_pruned = on_pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Prune, then wait `every_s`, until `stop`. A failed pass (the log locked past the
        busy timeout, a full disk) is logged and tried again at the next one."""
        while not stop.is_set():
            try:
                await self.prune_once()
            except EngineError as exc:
                log.warning("history retention: this pass failed, next in %.0fs: %s",
                            self._every_s, exc.message)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every_s)

    async def prune_once(self) -> int:
        cutoff = self._clock.now_ms() - self._retention_ms
        done = await prune_history(
            self._log,
            finished_before_ms=cutoff,
            on_batch=lambda part: self._on_pruned(part.sagas),
        )
        if done.sagas:
            log.info(
                "history retention: pruned %d sagas finished before the last %.0fs "
                "(%d transitions)",
                done.sagas,
                self._retention_ms / 1000,
                done.transitions,
            )
        return done.sagas
