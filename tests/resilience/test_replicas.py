"""Replicas behind an address list: the gateway spreads its calls over two replicas of
Payment and of Inventory (grpc's round_robin), and when one of each is SIGKILLed in the
middle of a load, every order still ends CONFIRMED through the replicas left.

Each replica here keeps its own SQLite ledger (a shared ledger needs PostgreSQL), so the
test is built around what separate ledgers can show honestly:
- Order is not replicated: CreateOrder and UpdateOrderStatus of one order must meet the
  same ledger. Payment (one Charge per confirmed order) and Inventory (one Reserve) can
  be: each call is whole on the replica that took it.
- Spread: before any kill, every confirmed order's charge and reservation are on exactly
  one replica, and each replica holds some of them.
- Routing around: replica B answers each mutating call 300 ms late (before any effect),
  so that calls are in flight on it when it dies; they fail UNAVAILABLE, and grpc's
  retry (or else the saga's) sends them to the replica left. Every order is charged and
  reserved on A or on B (read after B is started again); an order created after the kill
  has returned (the replica is reaped) only on A. Not "exactly once across both": with
  separate ledgers, a call B committed just before its SIGKILL, unanswered, is applied
  again by A; one shared PostgreSQL ledger is what makes that retry harmless.
- A replica that is up but answers UNAVAILABLE does not spend the saga's attempts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import httpx
import pytest

from engine.net import parse_target
from orders.channels import sync_channel
from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from proto.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.support.procs import ServiceProcess, free_port, start_service
from tests.support.prom import scrape
from tests.support.stack import PLENTY, Stack, wait_terminal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BODY: Final = {"customer_id": "c1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 50}]}
SEED: Final = {"INVENTORY_SEED_STOCK": PLENTY}
SLOW: Final = {"SAGA_ENV": "test", "SAGA_FAULTS": "*:latency_ms:300"}


def charged(replica: ServiceProcess) -> set[str]:
    with sync_channel(parse_target(replica.address, "payment"), None) as channel:
        stub = payment_pb2_grpc.PaymentStub(channel)
        page = stub.ListPayments(payment_pb2.ListPaymentsRequest(page_size=1000), timeout=10)
    assert not page.next_page_token
    return {p.order_id for p in page.payments}


def reserved(replica: ServiceProcess) -> set[str]:
    with sync_channel(parse_target(replica.address, "inventory"), None) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        request = inventory_pb2.ListReservationsRequest(page_size=1000)
        page = stub.ListReservations(request, timeout=10)
    assert not page.next_page_token
    return {r.order_id for r in page.reservations}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.create(tmp_path, SAGA_STEP_TIMEOUT_S="2", **SEED)
    try:
        yield stack
    finally:
        stack.close()


def replicas(stack: Stack, name: str, root: Path) -> tuple[ServiceProcess, ServiceProcess]:
    """Two replicas of `name`, each with its own ledger, and the stack's callers pointed at
    both with one comma-separated list."""
    pair = (
        start_service(name, root / f"{name}-a", free_port(), SEED),
        start_service(name, root / f"{name}-b", free_port(), {**SEED, **SLOW}),
    )
    var = f"{name.upper()}_SERVICE_ADDR"
    stack.env[var] = ",".join(p.address for p in pair)
    stack.services[f"{name}-a"], stack.services[f"{name}-b"] = pair
    return pair[0], pair[1]


def post(http: httpx.Client) -> str:
    resp = http.post("/orders", json=BODY)
    assert resp.status_code == 201, resp.text
    order_id: str = resp.json()["id"]
    return order_id


def test_calls_spread_over_replicas_and_route_around_a_dead_one(
    stack: Stack, tmp_path: Path
) -> None:
    port = int(stack.env["ORDER_SERVICE_ADDR"].rsplit(":", 1)[1])
    stack.services["order"] = start_service("order", stack.data, port)
    pay_a, pay_b = replicas(stack, "payment", tmp_path)
    inv_a, inv_b = replicas(stack, "inventory", tmp_path)
    stack.start_gateway()

    with stack.client() as http:
        first = [post(http) for _ in range(12)]
        assert {wait_terminal(http, oid)["status"] for oid in first} == {"CONFIRMED"}

        for a, b, read in ((pay_a, pay_b, charged), (inv_a, inv_b, reserved)):
            on_a, on_b = read(a), read(b)
            assert on_a and on_b, f"round_robin used one replica only: {on_a=} {on_b=}"
            assert not on_a & on_b, "an order reached both replicas"
            assert on_a | on_b == set(first)

        # A load of orders; one replica of each service is SIGKILLed in the middle of it.
        before: list[str] = []
        after: list[str] = []
        killed = threading.Event()

        def one(i: int) -> None:
            was_killed = killed.is_set()
            oid = post(http)
            (after if was_killed else before).append(oid)
            if i == 10:
                pay_b.kill()
                inv_b.kill()
                killed.set()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(40)))
        assert len(after) >= 20
        ended = {oid: wait_terminal(http, oid, within_s=60)["status"] for oid in before + after}
        assert set(ended.values()) == {"CONFIRMED"}, ended
        assert http.get("/readyz").status_code == 200, "one replica up is enough"

    assert set(after) <= charged(pay_a), "after the kill, only the replica left can charge"
    assert set(after) <= reserved(inv_a)
    pay_b.start()
    inv_b.start()
    assert set(before) <= charged(pay_a) | charged(pay_b)
    assert set(before) <= reserved(inv_a) | reserved(inv_b)


def test_a_replica_that_answers_unavailable_does_not_spend_the_sagas_attempts(
    tmp_path: Path,
) -> None:
    """Inventory B is up but refuses every Reserve with UNAVAILABLE (as a replica whose
    ledger is unreachable does), and the saga gets one attempt at that step: without
    grpc's retry on the next replica, every other order would be cancelled. One order at
    a time, so that no other saga's call takes A's turn in the rotation between a call
    and its retry (with many at once a retry may meet B again: engine/net.py)."""
    stack = Stack.create(tmp_path, SAGA_STEP_MAX_ATTEMPTS="1", **SEED)
    try:
        port = int(stack.env["ORDER_SERVICE_ADDR"].rsplit(":", 1)[1])
        stack.services["order"] = start_service("order", stack.data, port)
        pay_port = int(stack.env["PAYMENT_SERVICE_ADDR"].rsplit(":", 1)[1])
        stack.services["payment"] = start_service("payment", stack.data, pay_port)
        sick = {**SEED, "SAGA_ENV": "test", "SAGA_FAULTS": "Reserve:before:1"}
        inv_a = start_service("inventory", tmp_path / "inv-a", free_port(), SEED)
        inv_b = start_service("inventory", tmp_path / "inv-b", free_port(), sick)
        stack.services["inventory-a"], stack.services["inventory-b"] = inv_a, inv_b
        stack.env["INVENTORY_SERVICE_ADDR"] = f"{inv_a.address},{inv_b.address}"
        stack.start_gateway()
        with stack.client() as http:
            ended = {
                oid: wait_terminal(http, oid)["status"] for oid in (post(http) for _ in range(12))
            }
            ids = list(ended)
        assert set(ended.values()) == {"CONFIRMED"}, ended
        assert reserved(inv_a) == set(ids)
        metrics = re.search(r"metrics on ([\d.]+:\d+)", inv_b.output())
        assert metrics is not None
        refused = scrape(f"http://{metrics[1]}/metrics").value(
            "saga_service_rpc_total", method="Reserve", code="UNAVAILABLE"
        )
        assert refused > 0, "the sick replica was never asked: the test proved nothing"
    finally:
        stack.close()
