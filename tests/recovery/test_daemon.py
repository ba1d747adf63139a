"""The recovery daemon as a real process against the real services: it finishes what a
dead gateway left, survives its own SIGKILL mid-recovery, shares work with a second
daemon, and leaves every invariant of the contract true (checked by the audit)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import pytest

from engine.crashpoints import STEP_POINTS
from engine.saga_log import SagaFilter
from orders.model import OrderRequest
from tests.support.stack import ORDERS, Stack, wait_for


def mixed(n: int) -> list[tuple[str, OrderRequest]]:
    kinds = list(ORDERS)
    return [(f"o-{i:04d}", ORDERS[kinds[i % 3]]) for i in range(n)]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_daemon_finishes_what_a_dead_gateway_left(stack: Stack) -> None:
    stack.seed_sagas(mixed(60), owner="gateway@dead")
    daemon = stack.recovery()
    report = stack.audit(wait_s=60)
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 20, "CANCELLED": 40}
    # Counted just after the log's commit wakes the daemon: read once it has caught up.
    assert settled(lambda: metric(daemon.metrics_port, "saga_recovered_total"), 60) == 60
    with stack.log() as log:
        rec = log.get_sync("o-0001")
    assert rec is not None
    assert rec.reason == "payment_declined"


def test_daemon_killed_mid_recovery_then_restarted(stack: Stack) -> None:
    stack.seed_sagas(mixed(90), owner=None)
    # dies the 20th time it is about to charge a payment: mid-recovery, mid-flight
    daemon = stack.recovery({"SAGA_CRASH_AT": "after_intent:charge_payment#20"}, wait=False)
    assert daemon.wait(60) == -9
    daemon.env.pop("SAGA_CRASH_AT")
    daemon.start()
    report = stack.audit(wait_s=60)
    assert report.ok, [str(v) for v in report.violations]
    assert report.orders == 90


@pytest.mark.parametrize("point", ["after_call", "after_intent"])
def test_two_daemons_share_the_work_and_one_dies(stack: Stack, point: str) -> None:
    assert point in STEP_POINTS
    stack.seed_sagas(mixed(120), owner=None)
    # small claims, so that the two daemons really share the sagas between them
    share = {"SAGA_RECOVERY_CONCURRENCY": "8"}
    doomed = stack.recovery(
        {**share, "SAGA_CRASH_AT": f"{point}:reserve_stock#5"}, name="d2", wait=False
    )
    # d1 starts once d2 holds sagas, so d1 cannot finish all 120 before d2 reaches its fifth
    # reservation however slowly d2 started.
    wait_until_claimed(stack)
    stack.recovery(share, name="d1")
    report = stack.audit(wait_s=60)
    assert doomed.wait(30) == -9
    assert report.ok, [str(v) for v in report.violations]
    assert report.orders == 120


def settled(read: Callable[[], float], expected: float, within_s: float = 10.0) -> float:
    """`read()` once it reaches `expected` (or the deadline passes), to be compared exactly:
    a counter that overshoots still fails."""
    deadline = time.monotonic() + within_s
    while (value := read()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def wait_until_claimed(stack: Stack) -> None:
    with stack.log() as log:
        wait_for(
            lambda: any(r.owner for r in log.list_sagas_sync(SagaFilter(), limit=1000).items),
            what="no daemon claimed a saga",
        )


def test_audit_command_reports_and_exits(stack: Stack) -> None:
    stack.seed_sagas(mixed(3), owner=None)
    cmd = [sys.executable, "-m", "saga", "audit"]
    pending = subprocess.run(cmd, env=stack.env, capture_output=True, text=True, timeout=60)
    assert pending.returncode == 1
    assert "not finished" in pending.stdout
    stack.recovery()
    done = subprocess.run(
        [*cmd, "--wait", "60"], env=stack.env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all invariants hold" in done.stdout
