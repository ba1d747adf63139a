"""Kills under load: the gateway SIGKILLed at random moments and restarted; participants
SIGKILLed mid-load (and losing responses after committing); a paused owner coming back
after another took over. Every order that got a 201 ends, and the audit passes."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase
from tests.resilience.conftest import soak_scale
from tests.resilience.load import LoadResult, judge_run, kill_in_turn, run_load
from tests.support.stack import PLENTY, Stack

# Short leases: a killed owner's sagas are taken over within a second or two.
FAST = {"SAGA_LEASE_S": "1", "INVENTORY_SEED_STOCK": PLENTY}
KILLS = 4  # of the gateway, under the load of `run_random_kills`


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, **FAST)
    yield s
    s.close()


def run_random_kills(stack: Stack, orders: int, seed: int) -> LoadResult:
    stack.start_services()
    stack.recovery()
    stack.start_gateway()
    gateway = stack.gateway
    assert gateway is not None
    # The first kill a quarter of the way through the load, so that it cuts sagas short
    # on any machine; the others at random moments after it.
    killer = kill_in_turn([gateway] * KILLS, (0.4, 1.2), seed, first_at=orders // 4)
    result = run_load(stack, orders, during=killer)
    verdict = judge_run(stack, settle_s=60)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders
    assert verdict.counts["orders"] == orders, "one key, one order"
    assert result.kills == KILLS
    return result


def test_gateway_killed_at_random_moments_under_load(stack: Stack) -> None:
    result = run_random_kills(stack, orders=240, seed=1)
    with stack.log() as log:
        resumed = [
            order_id
            for order_id in result.accepted.values()
            if any(t.phase is Phase.CLAIMED for t in log.transitions_sync(order_id))
        ]
    assert resumed, "the kills cut sagas short, and something else finished them"


@pytest.mark.soak
def test_soak_everything_killed_dozens_of_times(stack: Stack) -> None:
    """Thousands of orders; the gateway, the daemon and the services SIGKILLed at random
    and restarted, over and over. Prints the summary table, then judges."""
    stack.start_services({"SAGA_FAULTS": "*:after_commit:0.02,seed:5"})
    daemon = stack.recovery()
    stack.start_gateway()
    rnd = random.Random(6)

    def killer(done: threading.Event, result: LoadResult) -> None:
        while not done.wait(rnd.uniform(0.5, 1.5)):
            victim = rnd.choice(["gateway"] * 4 + ["recovery", "order", "payment", "inventory"])
            proc = {"gateway": stack.gateway, "recovery": daemon}.get(victim)
            proc = proc or stack.services[victim]
            assert proc is not None
            proc.kill()
            result.kills += 1
            time.sleep(rnd.uniform(0.0, 0.3))
            proc.start()

    orders = 300 * soak_scale()
    result = run_load(stack, orders, workers=32, during=killer, timeout_s=3600)
    verdict = judge_run(stack, settle_s=300)
    with stack.log() as log:
        recovered = sum(
            any(t.phase is Phase.CLAIMED for t in log.transitions_sync(order_id))
            for order_id in result.accepted.values()
        )
    print(
        "\n| orders | kills | recovered sagas | violations | retried POSTs | replayed 201s |"
        "\n|---|---|---|---|---|---|"
        f"\n| {len(result.accepted)} | {result.kills} | {recovered} | {len(verdict.violations)}"
        f" | {result.retries} | {result.replays} |"
    )
    assert verdict.ok, verdict.report()
    assert verdict.counts["orders"] == orders


def test_participants_die_mid_load_and_lose_responses(stack: Stack) -> None:
    # every mutating call: 10% fail before the effect, 10% commit and then lose the reply
    stack.start_services({"SAGA_FAULTS": "*:before:0.1,*:after_commit:0.1,seed:3"})
    stack.recovery()
    stack.start_gateway()
    victims = [stack.services[name] for name in ("inventory", "payment", "order")]
    killer = kill_in_turn(victims, (0.5, 1.0), seed=4)
    result = run_load(stack, 180, during=killer)
    verdict = judge_run(stack, settle_s=90)
    assert verdict.ok, verdict.report()
    assert result.kills == len(victims)


def test_a_paused_owner_is_fenced_when_it_wakes(stack: Stack) -> None:
    # Charges take 3 s, so the gateway is caught mid-pivot when it is frozen: every saga
    # must reach its charge before the first charge returns, on a loaded machine too.
    stack.start_services({"SAGA_FAULTS": "Charge:latency_ms:3000"})
    stack.start_gateway()
    assert stack.gateway is not None
    with stack.client() as http:
        ids = [
            http.post(
                "/orders",
                json={"customer_id": "c", "items": [{"product_id": "prod_1", "quantity": 1,
                                                     "price": 10.0}]},
            ).json()["id"]
            for _ in range(5)
        ]  # fmt: skip
    with stack.log() as log:
        deadline = time.monotonic() + 10
        while not all(
            any(t.step == "charge_payment" and t.phase is Phase.INTENT
                for t in log.transitions_sync(i))
            for i in ids
        ):  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.02)
    os.kill(stack.gateway.pid, signal.SIGSTOP)  # a zombie owner: alive, silent, mid-call
    try:
        stack.recovery()
        report = stack.audit(wait_s=60)  # the daemon takes over once the lease runs out
        assert report.ok, [str(v) for v in report.violations]
    finally:
        os.kill(stack.gateway.pid, signal.SIGCONT)
    time.sleep(2.0)  # the zombie wakes, finishes its calls, tries to write
    report = stack.audit()
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 5}
    with stack.log() as log:
        for order_id in ids:
            rec = log.get_sync(order_id)
            assert rec is not None
            assert rec.owner is not None
            assert rec.owner.startswith("recovery"), "the daemon finished it"
            phases = [t.phase for t in log.transitions_sync(order_id)]
            assert phases.count(Phase.COMPLETED) == 1
    assert stack.gateway.running, "the woken gateway carries on serving"
