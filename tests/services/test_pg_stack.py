"""The whole system with every ledger in one PostgreSQL database (the saga log too, each
in its own schema) and two replicas of each service behind the callers' address lists:
orders flow, one replica of each service is SIGKILLed in the middle of the load and not
restarted, and every acknowledged order still ends, with a clean audit."""

from __future__ import annotations

import concurrent.futures
import re
from pathlib import Path

import pytest

from proto.inventory.v1 import inventory_pb2 as inv
from tests.support.procs import ServiceProcess, free_port, start_service
from tests.support.prom import scrape
from tests.support.stack import ORDERS, PLENTY, Stack, wait_terminal

pytestmark = pytest.mark.slow

ORDERS_PER_KIND = 12


def test_orders_end_cleanly_when_a_replica_of_each_service_dies(
    pg_url: str, tmp_path: Path
) -> None:
    databases = {
        f"{name}_DATABASE_URL": pg_url for name in ("SAGA", "ORDER", "PAYMENT", "INVENTORY")
    }
    stack = Stack.create(tmp_path, INVENTORY_SEED_STOCK=PLENTY, **databases)
    try:
        stack.start_services()
        doomed: list[ServiceProcess] = []
        for name, svc in stack.services.items():
            var = f"{name.upper()}_SERVICE_ADDR"
            env = {k: v for k, v in stack.env.items() if k != var}
            second = start_service(name, tmp_path / "second", free_port(), env, wait=False)
            doomed.append(second)
            stack.env[var] = f"{svc.address},{second.address}"  # callers spread over both
        for proc in doomed:
            proc.wait_ready()
        stack.start_gateway()
        stack.recovery()
        with stack.client() as http:

            def post(i: int) -> str:
                request = list(ORDERS.values())[i % len(ORDERS)]
                body = {
                    "customer_id": request.customer_id,
                    "items": [
                        {"product_id": item.product_id, "quantity": item.quantity,
                         "price": item.unit_price_cents / 100}
                        for item in request.items
                    ],
                }  # fmt: skip
                resp = http.post("/orders", json=body, headers={"Idempotency-Key": f"k{i}"})
                assert resp.status_code == 201, resp.text
                return str(resp.json()["id"])

            total = ORDERS_PER_KIND * len(ORDERS)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                first_half = list(pool.map(post, range(total // 2)))
                for proc in doomed:
                    assert answered(proc) > 0, f"{proc.name} took no calls before its kill"
                    proc.kill()  # one replica of each service, for good
                second_half = list(pool.map(post, range(total // 2, total)))
            ends = {oid: wait_terminal(http, oid, 60)["status"] for oid in first_half + second_half}
        assert set(ends.values()) == {"CONFIRMED", "CANCELLED"}
        report = stack.audit(wait_s=60)
        assert report.ok, report.violations
        stock = stack.inventory_stub().GetStock(inv.GetStockRequest(product_ids=["prod_1"]))
        assert stock.reserved["prod_1"] == list(ends.values()).count("CONFIRMED")
    finally:
        stack.close()


def answered(proc: ServiceProcess) -> float:
    """RPCs a service replica has answered, from its Prometheus endpoint (the port it
    picked is on its serving line)."""
    match = re.search(r"metrics on (\S+?)\)", proc.output())
    assert match is not None, proc.output()
    return scrape(f"http://{match.group(1)}/metrics").value("saga_service_rpc_total")
