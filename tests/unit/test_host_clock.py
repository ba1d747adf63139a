"""The saga log's clock: every process that opens a log in one boot reads one timeline,
whatever its own wall clock says, and a new boot ends the leases of the last one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.clock import HostClock, SystemClock, boot_ms
from engine.saga_log import NewSaga
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog

HOUR_MS = 3_600_000


def skew_wall_clock(monkeypatch: pytest.MonkeyPatch, by_ms: int) -> None:
    real = SystemClock.now_ms
    monkeypatch.setattr(SystemClock, "now_ms", lambda self: real(self) + by_ms)


def test_a_process_with_a_skewed_wall_clock_reads_the_first_opener_s_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))
    try:
        skew_wall_clock(monkeypatch, HOUR_MS)  # as if this process's clock were set ahead
        second = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))
        looker = SqliteSagaLog.open_readonly(DbConfig(tmp_path / "saga.db"))
        try:
            readings = [log.clock.now_ms() for log in (first, second, looker)]
        finally:
            second.close_sync()
            looker.close_sync()
    finally:
        first.close_sync()
    assert max(readings) - min(readings) < 1_000, readings
    # And it is the wall clock (of the first opener), not the boot clock.
    assert abs(readings[0] - (SystemClock().now_ms() - HOUR_MS)) < 60_000


def test_a_new_boot_ends_the_leases_of_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DbConfig(tmp_path / "saga.db")
    log = SqliteSagaLog.open(cfg)
    now = log.clock.now_ms()
    far = now + 10 * HOUR_MS  # a lease that, read on the next boot's timeline, never ends

    async def seed() -> None:
        await log.create(
            NewSaga("owned", "d", b"{}"), owner="dead@old-boot", lease_expires_ms=far, now_ms=now
        )

    asyncio.run(seed())
    log.close_sync()

    monkeypatch.setattr("engine.sqlite_log.boot_id", lambda: "another-boot")
    log = SqliteSagaLog.open(cfg)
    try:
        assert asyncio.run(log.count_claimable(now_ms=log.clock.now_ms())) == 1
        rec = log.get_sync("owned")
        assert rec is not None and rec.lease_expires_ms == 0
        # Its base is this boot's: a reopen in the same boot keeps it.
        base = log.clock.base_ms
    finally:
        log.close_sync()
    again = SqliteSagaLog.open(cfg)
    try:
        assert again.clock.base_ms == base
    finally:
        again.close_sync()


def test_the_host_clock_moves_with_the_boot_clock_not_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = HostClock.starting_now()
    before, boot_before = clock.now_ms(), boot_ms()
    skew_wall_clock(monkeypatch, -HOUR_MS)  # the wall clock is stepped back an hour
    after, boot_after = clock.now_ms(), boot_ms()
    assert 0 <= after - before <= boot_after - boot_before + 5
