"""Jumping clocks: real processes whose wall clock is set apart from the host's and jumps
while they work (Debian's libfaketime, with the monotonic and boot clocks left real, as a
step of the wall clock leaves them). Leases read the saga log's clock (engine/clock.py),
so none of it matters: no live lease is taken over, a dead owner's sagas are finished
within a lease and a scan, and the audit holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase
from tests.resilience.load import LoadResult, judge_run, run_load
from tests.support.clocks import WallClock, faketime_preload
from tests.support.stack import PLENTY, Stack, wait_for

# The default lease: long enough that a loaded machine does not starve a live owner's
# heartbeat of it, so that a takeover here can only come from misjudged time.
LEASE = {"SAGA_LEASE_S": "10", "INVENTORY_SEED_STOCK": PLENTY}
# Sagas last long enough that a lease is renewed, and taken over if it is not, mid-saga.
SLOW_CHARGE = {"SAGA_FAULTS": "Charge:latency_ms:600"}


@pytest.fixture
def preload(tmp_path: Path) -> str:
    return faketime_preload(tmp_path)


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
    wait_for(lambda: all_finished(stack, result), 45, "a dead owner's sagas were left")
    took = time.monotonic() - killed_at
    assert claimed(stack, result), "the gateway's death left nothing to take over"
    stack.start_gateway()  # the judge asks the gateway about each order
    verdict = judge_run(stack)
    assert verdict.ok, verdict.report()
    assert took < 45  # an hour, judged by the dead gateway's clock


def all_finished(stack: Stack, result: LoadResult) -> bool:
    with stack.log() as log:
        records = [log.get_sync(oid) for oid in result.accepted.values()]
    return all(r is not None and r.status.finished for r in records)
