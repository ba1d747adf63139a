"""The bound of the durable queue: how many sagas may wait in the log for a runner's slot.

A saga the runner has no slot for waits in the log, unowned, until a runner with room
claims it; past `max_queue` waiting sagas, `Runner.start_saga` refuses a new one
(Overloaded) instead of letting the queue grow. Two things make that bound real:

- Concurrent starts: each would count the queue and then write, so every start in flight
  would see the same count and all of them would queue. Here a start takes its place
  before it writes, so the starts in flight count too.
- Cost: counting the queue scans its index, so under overload every refusal would pay for
  the whole queue. The log is counted at most every `refresh_s`; in between, the places
  handed out since are added to it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Admission"]

REFRESH_S: Final = 0.05


@dataclass(slots=True)
class Admission:
    """The queue's depth as this runner knows it (see the module)."""

    refresh_s: float = REFRESH_S
    _counted: int = 0  # sagas waiting in the log, at the last count
    _counted_at: float = field(default=float("-inf"))
    _in_flight: int = 0  # places handed out whose write has not ended
    _landed: int = 0  # places whose write ended since the last count began

    async def enter(self, max_queue: int, count: Callable[[], Awaitable[int]]) -> int | None:
        """Take a place in the queue (then `leave` once the write has ended), or None
        when it is full: then the depth seen. `count` reads the log's queue depth; it is
        called at most once per `refresh_s`."""
        now = time.monotonic()
        if now - self._counted_at >= self.refresh_s:
            self._counted_at = now
            self._landed = 0  # what lands from now on may be missing from the count
            self._counted = await count()
        depth = self._counted + self._in_flight + self._landed
        if depth >= max_queue:
            return depth
        self._in_flight += 1
        return None

    def leave(self) -> None:
        """The write of a place handed out by `enter` has ended (either way). Counted as
        waiting until the next count, which is on the safe side for a replay, a failed
        write, or a saga a runner took at once."""
        self._in_flight -= 1
        self._landed += 1
