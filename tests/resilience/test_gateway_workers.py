"""SAGA_GATEWAY_WORKERS: worker processes serving one port, each with its own runner over
the shared saga log. A worker SIGKILLed mid-load loses nothing: every order that got a
201 ends, the supervisor starts a new worker, and the audit passes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase
from tests.resilience.load import LoadResult, judge_run, run_load
from tests.support.stack import PLENTY, Stack, wait_for

WORKERS = 2
KILLS = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, SAGA_LEASE_S="1", INVENTORY_SEED_STOCK=PLENTY)
    yield s
    s.close()


def workers_of(pid: int) -> set[int]:
    """The live child processes of `pid` (/proc/*/stat's parent field)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def busiest(pids: set[int]) -> int | None:
    """The worker using the most CPU over a tenth of a second: one serving connections
    (a client keeps its connection, so a worker started after a kill may have none)."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(0.1)
    return max(pids, key=lambda pid: cpu_ticks(pid) - before[pid], default=None)


def test_a_worker_killed_under_load_loses_no_order(stack: Stack) -> None:
    # Slow calls: a worker always has sagas in flight when it is killed.
    stack.start_services({"SAGA_FAULTS": "*:latency_ms:30"})
    stack.recovery()
    gateway = stack.start_gateway(SAGA_GATEWAY_WORKERS=str(WORKERS))
    serving = "gateway serving on"
    wait_for(lambda: gateway.output().count(serving) == WORKERS, 30, "the workers did not start")
    first = workers_of(gateway.pid)
    killed: list[int] = []
    orders = 240

    def killer(done: threading.Event, result: LoadResult) -> None:
        for i in range(KILLS):
            # Mid-load however fast the machine: after a share of the 201s.
            while len(result.accepted) < orders * (i + 1) // (KILLS + 2) and not done.wait(0.005):
                pass
            # The first workers while they last: they are surely serving by now, where a
            # restarted one may still be starting (and busy importing).
            alive = workers_of(gateway.pid)
            victim = busiest(alive & first or alive)
            if victim is None:
                continue
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            with result.lock:
                result.kills += 1

    result = run_load(stack, orders, during=killer)
    verdict = judge_run(stack, settle_s=60)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders
    assert verdict.counts["orders"] == orders, "one key, one order"
    assert result.kills == KILLS
    assert gateway.running, "a worker's death is not the gateway's"
    wait_for(lambda: len(workers_of(gateway.pid)) == WORKERS, 30, "no worker was restarted")
    assert not set(killed) & workers_of(gateway.pid)
    assert workers_of(gateway.pid) - first, "the supervisor started new workers"
    with stack.log() as log:
        resumed = [
            order_id
            for order_id in result.accepted.values()
            if any(t.phase is Phase.CLAIMED for t in log.transitions_sync(order_id))
        ]
    assert resumed, "the kills cut sagas short, and something else finished them"


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(stack: Stack) -> None:
    stack.start_services()
    gateway = stack.start_gateway(SAGA_GATEWAY_WORKERS=str(WORKERS))
    wait_for(
        lambda: len(workers_of(gateway.pid)) == WORKERS or not gateway.running,
        30,
        "the workers did not start",
    )
    assert gateway.running, gateway.output()
    workers = workers_of(gateway.pid)
    os.kill(gateway.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while gateway.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.returncode == 0, gateway.output()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers), "none outlives it"
