"""Jumping clocks: real processes whose wall clock is set apart from the host's and jumps
while they work (Debian's libfaketime, with the monotonic and boot clocks left real, as a
step of the wall clock leaves them). Leases read the saga log's clock (engine/clock.py),
so none of it matters: no live lease is taken over, a dead owner's sagas are finished
within a lease and a scan, and the audit holds."""

from __future__ import annotations

import glob
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase
from tests.resilience.load import LoadResult, judge_run, run_load
from tests.support.stack import PLENTY, Stack, wait_for

# A lease long enough that a loaded machine never starves a live owner's heartbeat of it:
# a takeover here can only come from misjudged time.
LEASE = {"SAGA_LEASE_S": "5", "INVENTORY_SEED_STOCK": PLENTY}
# Sagas last long enough that a lease is renewed, and taken over if it is not, mid-saga.
SLOW_CHARGE = {"SAGA_FAULTS": "Charge:latency_ms:600"}

# The kernel's clock_nanosleep, not libfaketime's: with DONT_FAKE_MONOTONIC=1 its wrapper
# answers EINVAL to every absolute sleep on the monotonic clock (Python's time.sleep).
SHIM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int clock_nanosleep(clockid_t id, int flags, const struct timespec *req,
                    struct timespec *rem) {
    return syscall(SYS_clock_nanosleep, id, flags, req, rem) == -1 ? errno : 0;
}
"""


class WallClock:
    """A wall clock for child processes, `offset` from the host's, changeable while they
    run (libfaketime re-reads its file once a second: every call would slow the process down)."""

    def __init__(self, folder: Path, name: str, preload: str) -> None:
        self.file = folder / f"{name}.faketime"
        self.preload = preload
        self.set("+0")

    def set(self, offset: str) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.file)  # a reader never sees half a line

    @property
    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": self.preload,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_CACHE_DURATION": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }


@pytest.fixture
def preload(tmp_path: Path) -> str:
    """libfaketime with the shim in front of it (scripts/test installs libfaketime)."""
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("libfaketime is not installed (Debian: apt-get install faketime)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler to build the clock_nanosleep shim")
    source = tmp_path / "shim.c"
    source.write_text(SHIM)
    shim = tmp_path / "shim.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", shim, source], check=True)
    return f"{shim} {libs[0]}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, **LEASE)
    yield s
    s.close()


def claimed(stack: Stack, result: LoadResult) -> list[str]:
    with stack.log() as log:
        return [
            oid
            for oid in result.accepted.values()
            if any(t.phase is Phase.CLAIMED for t in log.transitions_sync(oid))
        ]


def test_owners_keep_their_leases_whatever_their_wall_clocks_do(
    stack: Stack, preload: str, tmp_path: Path
) -> None:
    # The gateway's clock starts an hour behind and jumps; the daemon's runs an hour ahead.
    # Judged by wall clocks, the daemon would see every lease of the gateway long expired
    # and take over every saga it drives.
    gateway_clock = WallClock(tmp_path, "gateway", preload)
    daemon_clock = WallClock(tmp_path, "daemon", preload)
    gateway_clock.set("-1h")
    daemon_clock.set("+1h")
    stack.start_services(SLOW_CHARGE)
    stack.start_gateway(env=gateway_clock.env)
    stack.recovery({**daemon_clock.env, **LEASE})

    def jumps(done: threading.Event, result: LoadResult) -> None:
        for offset in ("+2h", "-3h", "+0", "+1d"):
            if done.wait(0.4):
                return
            gateway_clock.set(offset)

    result = run_load(stack, 60, during=jumps)
    wait_for(lambda: all_finished(stack, result), 60, "orders still running")
    assert claimed(stack, result) == [], "a live owner's saga was taken over"
    verdict = judge_run(stack)
    assert verdict.ok, verdict.report()


def test_a_dead_owner_whose_clock_ran_ahead_has_its_sagas_finished_in_a_lease(
    stack: Stack, preload: str, tmp_path: Path
) -> None:
    # Judged by wall clocks, the leases of a gateway an hour ahead would hold for an hour
    # after it died.
    gateway_clock = WallClock(tmp_path, "gateway", preload)
    gateway_clock.set("+1h")
    stack.start_services(SLOW_CHARGE)
    gateway = stack.start_gateway(env=gateway_clock.env)
    result = run_load(stack, 30)
    gateway.kill()  # its sagas are mid-charge: 600 ms each
    killed_at = time.monotonic()
    stack.recovery(LEASE)  # scans every 0.2 s
    wait_for(lambda: all_finished(stack, result), 30, "a dead owner's sagas were left")
    took = time.monotonic() - killed_at
    assert claimed(stack, result), "the gateway's death left nothing to take over"
    stack.start_gateway()  # the judge asks the gateway about each order
    verdict = judge_run(stack)
    assert verdict.ok, verdict.report()
    assert took < 30  # an hour, judged by the dead gateway's clock


def all_finished(stack: Stack, result: LoadResult) -> bool:
    with stack.log() as log:
        records = [log.get_sync(oid) for oid in result.accepted.values()]
    return all(r is not None and r.status.finished for r in records)
