"""Crash-point matrix: for every crash point the engine lists and each of the contract's
three paths (confirmed, payment declined, out of stock), the gateway SIGKILLs itself at
that point of a real order; another owner (the recovery daemon, or a restarted gateway)
finishes the saga; the order ends as its path says and the audit of every invariant
passes.

The cases come from the engine (`CRASH_POINTS`, `STEP_POINTS`) and the order definition's
steps, not from a hand-kept list: a new crash point or step is covered automatically.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from engine.core import Phase
from engine.crashpoints import CRASH_POINTS, STEP_POINTS
from orders.saga import order_saga_shape
from tests.support.procs import SagaProcess
from tests.support.stack import PLENTY, Stack

# The definition's shape only: no participant is ever called through it here.
SHAPE = order_saga_shape()
EXPECTED = {
    "success": ("CONFIRMED", None),
    "declined": ("CANCELLED", "payment_declined"),
    "out_of_stock": ("CANCELLED", "out_of_stock"),
}
BODIES = {
    "success": {"product_id": "prod_1", "quantity": 1, "price": 50.00},
    "declined": {"product_id": "prod_1", "quantity": 1, "price": 600.00},
    "out_of_stock": {"product_id": "prod_3", "quantity": 1, "price": 1.00},
}


def _cases() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for point in CRASH_POINTS:
        if point not in STEP_POINTS:
            cases.append((point, ""))
            continue
        for step in SHAPE.steps:
            if "comp" in point and step.compensation is None:
                continue  # a step without a compensation never reaches those points
            cases.append((point, step.name))
    return cases


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.create(tmp_path_factory.mktemp("matrix"), INVENTORY_SEED_STOCK=PLENTY)
    s.start_services()
    s.recovery()
    yield s
    report = s.audit(wait_s=30)
    s.close()
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize("path", list(EXPECTED))
@pytest.mark.parametrize(("point", "step"), _cases(), ids=lambda v: v or "-")
def test_gateway_dies_at_the_point_and_the_daemon_finishes(
    stack: Stack, point: str, step: str, path: str
) -> None:
    key = f"{point}-{step}-{path}"
    crash_at = f"{point}:{step}" if step else point
    gateway = stack.start_gateway(SAGA_CRASH_AT=crash_at, SAGA_LEASE_S="1")
    body = {"customer_id": "cust_1", "items": [BODIES[path]]}
    order_id: str | None = None
    with contextlib.suppress(httpx.TransportError), stack.client() as http:
        resp = http.post("/orders", json=body, headers={"X-Idempotency-Key": key})
        assert resp.status_code == 201, resp.text
        order_id = resp.json()["id"]
    if order_id is None:
        # Killed before answering (after_create): the saga is durable all the same; the
        # client's retry with its key finds it.
        assert gateway.wait(15) == -9
        stack.start_gateway()
        with stack.client() as http:
            resp = http.post("/orders", json=body, headers={"X-Idempotency-Key": key})
            assert resp.status_code == 201, resp.text
            assert resp.headers.get("Idempotent-Replayed") == "true"
            order_id = resp.json()["id"]
        died = True
    else:
        died = _ends_or_dies(stack, gateway, order_id)
    assert stack.gateway is not None
    stack.gateway.kill()
    with stack.log() as log:
        deadline = time.monotonic() + 30
        while True:
            rec = log.get_sync(order_id)
            assert rec is not None, "an order that got a 201 is in the log"
            if rec.status.finished or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        transitions = log.transitions_sync(order_id)
    status, reason = EXPECTED[path]
    assert rec.status.value == {"CONFIRMED": "COMPLETED", "CANCELLED": "COMPENSATED"}[status]
    assert rec.reason == reason
    if not died:
        pytest.skip(f"{crash_at} is not on the {path} path (the order ended normally)")
    if point != "after_finish":  # after that point there is nothing left to take over
        # another owner (the daemon, or the restarted gateway's pump) claimed and finished it
        assert any(t.phase is Phase.CLAIMED for t in transitions), "it was taken over"


def _ends_or_dies(stack: Stack, gateway: SagaProcess, order_id: str) -> bool:
    """Wait until the gateway kills itself at its crash point (True) or the order ends
    with the gateway alive, the point not being on this path (False)."""
    deadline = time.monotonic() + 30
    with stack.log() as log:
        while time.monotonic() < deadline:
            if gateway.returncode is not None:
                return gateway.returncode == -9
            rec = log.get_sync(order_id)
            if rec is not None and rec.status.finished:
                # finished: the crash point was either never reached or is after_finish
                with contextlib.suppress(subprocess.TimeoutExpired):
                    return gateway.wait(0.3) == -9
                return False
            time.sleep(0.02)
    raise AssertionError(f"order {order_id} neither ended nor killed its gateway")
