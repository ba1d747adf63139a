"""The database server's clock, read without a round trip per reading.

Leases are compared across hosts: one process writes "mine until T", another claims the
saga once the time passes T. With each host's own clock, a host whose clock runs ahead
would steal live leases, and one behind would keep dead ones. So every process sharing a
PostgreSQL log reads the server's clock: its offset from this process's monotonic clock
is measured against `clock_timestamp()` (half the round trip is the error bound) and
measured again periodically, so the readings follow the server even if this host's wall
clock is stepped. The claim also bounds the reading in SQL by the server's own clock
(engine/pg_log.py), so a reading that is too far ahead can never expire a live lease.
"""

from __future__ import annotations

import time
from typing import Final

from engine.pg.pool import Conn

__all__ = ["REMEASURE_S", "ServerClock"]

REMEASURE_S: Final = 30.0  # monotonic clocks drift by ppm: a few µs between measurements
MAX_ERROR_MS: Final = 25.0


def _mono_ms() -> float:
    return time.monotonic_ns() / 1_000_000


class ServerClock:
    """Milliseconds since the epoch on the database server's timeline (engine.clock.Clock)."""

    def __init__(self, offset_ms: float) -> None:
        self._offset_ms = offset_ms
        self.error_ms = 0.0  # half the round trip of the measurement in use
        self._measured = False

    @classmethod
    async def measured(cls, conn: Conn) -> ServerClock:
        clock = cls(0.0)
        await clock.measure(conn)
        return clock

    async def measure(self, conn: Conn) -> None:
        """Read the server's clock once; a reading whose round trip took longer than
        MAX_ERROR_MS twice over says little about when the server read it: the last
        good one is kept instead."""
        before = _mono_ms()
        server_ms = await conn.fetchval(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8"
        )
        after = _mono_ms()
        half = (after - before) / 2
        if self._measured and half > MAX_ERROR_MS:
            return
        self._measured = True
        self._offset_ms = float(server_ms) - (before + half)
        self.error_ms = half

    def now_ms(self) -> int:
        return int(_mono_ms() + self._offset_ms)
