"""What keeps a runner's ownership honest beside its drive loop: the lease heartbeat and
the claim pump.

- The heartbeat renews, in one statement, the lease of every saga the runner owns, and
  hands back the sagas its drives gave up on (the log could not be written, a bug) so
  that they are claimable at once.
- The pump claims sagas nobody drives (queued in the log by a busy runner, or left by a
  dead owner) whenever the runner has room, oldest first. Recovery is this same road.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.errors import EngineError, unreachable
from engine.hooks import Hooks
from engine.saga_log import SagaLog, Takeover

__all__ = ["ClaimPump", "LeaseHeartbeat"]

logger = logging.getLogger("engine.runner")


class LeaseHeartbeat:
    """Renews the owner's leases every third of a lease; releases what it is told to."""

    def __init__(
        self,
        saga_log: SagaLog,
        owner: str,
        lease_ms: int,
        now_ms: Callable[[], int],
        on_released: Callable[[], None],
    ) -> None:
        self._log = saga_log
        self._owner = owner
        self._lease_ms = lease_ms
        self._now_ms = now_ms
        self._on_released = on_released
        self._to_release: set[str] = set()

    def release_later(self, saga_id: str) -> None:
        """Hand this saga back at the next beat (its drive has stopped here)."""
        self._to_release.add(saga_id)

    def keep(self, saga_id: str) -> None:
        """Do not hand it back after all: a new claim of it is being driven here."""
        self._to_release.discard(saga_id)

    async def run(self) -> None:
        interval = max(0.05, self._lease_ms / 3000)
        while True:
            await asyncio.sleep(interval)
            try:
                if self._to_release:
                    pending = list(self._to_release)
                    await self._log.release(self._owner, pending)
                    self._to_release.difference_update(pending)
                    self._on_released()
                await self._log.renew(self._owner, lease_expires_ms=self._now_ms() + self._lease_ms)
            except EngineError as exc:
                level = logging.DEBUG if unreachable(exc) else logging.WARNING
                logger.log(level, "lease heartbeat failed: %s", exc.message)


class ClaimPump:
    """Claims claimable sagas for a runner whenever it has room (see the module)."""

    def __init__(
        self,
        saga_log: SagaLog,
        owner: str,
        lease_ms: int,
        now_ms: Callable[[], int],
        *,
        room: Callable[[], int],
        adopt: Callable[[Takeover], bool],
        hooks: Hooks,
        batch: int,
        poll_s: float,
    ) -> None:
        self._log = saga_log
        self._owner = owner
        self._lease_ms = lease_ms
        self._now_ms = now_ms
        self._room = room
        self._adopt = adopt
        self._hooks = hooks
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._stopping = False
        # Sagas the runner queued in the log may still wait there: new ones queue behind
        # them instead of overtaking them (the queue is drained oldest first). Cleared
        # when a claim comes back short with no saga queued meanwhile (`_queued` counts).
        self._backlog = False
        self._queued = 0

    @property
    def backlog(self) -> bool:
        """A saga the runner queued may still be waiting for a slot."""
        return self._backlog

    def queued(self) -> None:
        """The runner left a new saga waiting in the log: claim it when there is room."""
        self._backlog = True
        self._queued += 1
        self._wake.set()

    def wake(self) -> None:
        """Room was freed, or something became claimable: look again now."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        # Claim at once (recovery at start-up), then whenever woken or the poll interval
        # passes.
        while not self._stopping:
            await self.claim_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()

    async def claim_now(self) -> int:
        """Claim and hand to the runner as many claimable sagas as it has room for;
        returns how many."""
        free = self._room()
        if self._stopping or free <= 0:
            return 0
        limit = min(free, self._batch)
        now = self._now_ms()
        queued_before = self._queued
        try:
            taken = await self._log.claim(
                self._owner, limit=limit, now_ms=now, lease_expires_ms=now + self._lease_ms
            )
        except EngineError as exc:
            level = logging.DEBUG if unreachable(exc) else logging.WARNING
            logger.log(level, "claiming sagas failed: %s", exc.message)
            return 0
        for takeover in taken:
            self._adopt(takeover)
        self._hooks.claimed(len(taken))
        if taken and len(taken) == limit:
            self._wake.set()  # there may be more waiting
        elif self._queued == queued_before:
            self._backlog = False  # the queue was drained and nothing queued since
        return len(taken)
