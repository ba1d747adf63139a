"""The clocks of the engine.

Leases are compared across processes: one process writes "mine until T", another claims
the saga once its own clock passes T. With each process's wall clock, a clock stepped
forward in one process would steal live leases, and one stepped back would keep a dead
owner's leases for as long as the step. So every process on a host reads the saga log's
clock instead (`HostClock`): the wall clock as it was when the log was first opened in
this boot, advanced by the kernel's boot clock (CLOCK_BOOTTIME), which no setting of the
wall clock moves and which every process on the host shares. Its readings still look
like wall-clock milliseconds (they are shown as dates), and drift from the wall clock only
by the steps the wall clock took since that first open.

A SQLite log lives on one host, so this is the whole answer for it (the log keeps the
boot's base, engine/sqlite_log.py); a database shared by several hosts judges leases by
its own clock instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, Protocol

__all__ = ["Clock", "HostClock", "SystemClock", "boot_id", "boot_ms"]


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """This process's wall clock: for what a person reads, never for leases."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


# Linux's boot clock counts suspended time too; elsewhere the monotonic clock is the
# nearest (system-wide, not set by anyone).
_BOOT_CLOCK: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def boot_ms() -> int:
    """Milliseconds since this host booted, suspended time included."""
    return time.clock_gettime_ns(_BOOT_CLOCK) // 1_000_000


def boot_id() -> str:
    """This boot of this host: what a base of `HostClock` is valid for."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: no cheap way to tell boots apart
        return "unknown"


class HostClock:
    """`base_ms` + the boot clock: one timeline for every process on this host that was
    given the same base (see the module)."""

    def __init__(self, base_ms: int) -> None:
        self.base_ms = base_ms

    @classmethod
    def starting_now(cls) -> HostClock:
        """A timeline that reads this process's wall clock now."""
        return cls(SystemClock().now_ms() - boot_ms())

    def now_ms(self) -> int:
        return self.base_ms + boot_ms()
