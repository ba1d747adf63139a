"""The /metrics endpoints of real processes: the gateway (on its HTTP port), a service (on
its metrics port) and the recovery daemon (RECOVERY_METRICS_ADDR) publish the saga story's
names, and their values move as sagas run. Labels are names and outcomes, never ids."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.saga_log import NewSaga
from orders.model import ORDER_SAGA, Item, OrderRequest
from tests.gateway.procs import Stack, stack, wait_terminal
from tests.support.procs import ServiceProcess
from tests.support.prom import Scrape, scrape

pytestmark = pytest.mark.slow

ORDER = {"customer_id": "cust_1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 5}]}
DECLINED = {"customer_id": "cust_1", "items": [{"product_id": "prod_1", "quantity": 1,
                                               "price": 600}]}  # fmt: skip
# Charge is slow enough for a scrape to see a saga in flight (polled, never timed).
SLOW_CHARGE = {"SAGA_ENV": "test", "SAGA_FAULTS": "Charge:latency_ms:2000"}

GATEWAY_NAMES = (
    "saga_started", "saga_finished", "saga_step_duration_seconds", "saga_step_retries",
    "saga_compensations", "saga_inflight", "saga_oldest_unfinished_age_seconds",
    "saga_log_commit_seconds", "saga_log_writes_per_commit", "saga_sagas", "saga_queue_depth",
    "saga_idempotency_hits", "saga_http_requests", "saga_http_request_duration_seconds",
)  # fmt: skip
DAEMON_NAMES = (
    "saga_recovered", "saga_claimed", "saga_claim_scans", "saga_finished", "saga_inflight",
    "saga_step_duration_seconds", "saga_log_commit_seconds", "saga_oldest_unfinished_age_seconds",
)  # fmt: skip


def poll(url: str, ready: Callable[[Scrape], bool], within_s: float = 20.0) -> Scrape:
    deadline = time.monotonic() + within_s
    while True:
        now = scrape(url)
        if ready(now):
            return now
        assert time.monotonic() < deadline, "the metrics never got there"
        time.sleep(0.02)


def metrics_url(service: ServiceProcess) -> str:
    found = re.search(r"metrics on ([\d.]+:\d+)", service.output())
    assert found, service.output()
    return f"http://{found.group(1)}/metrics"


def finished(m: Scrape, outcome: str) -> float:
    return m.value("saga_finished_total", definition="order", outcome=outcome)


def test_gateway_service_and_daemon_metrics_move_as_sagas_run(tmp_path: Path) -> None:
    with stack(tmp_path, service_env=SLOW_CHARGE) as s, s.client() as client:
        gw = f"{s.url}/metrics"
        before = scrape(gw)
        assert set(GATEWAY_NAMES) <= before.families
        # Published at 0 from the start, so a dashboard's rate() has a series to work on.
        for outcome in ("completed", "compensated", "parked"):
            assert before.has("saga_finished_total", definition="order", outcome=outcome)
            assert finished(before, outcome) == 0
        assert before.value("saga_idempotency_hits_total", layer="log") == 0

        first = client.post("/orders", json=ORDER, headers={"X-Idempotency-Key": "k-1"})
        order_id = first.json()["id"]
        during = poll(gw, lambda m: m.value("saga_inflight") == 1)
        assert during.value("saga_sagas", status="RUNNING") == 1
        assert wait_terminal(client, order_id)["status"] == "CONFIRMED"
        done = poll(gw, lambda m: m.value("saga_inflight") == 0)
        assert finished(done, "completed") == 1
        assert done.value("saga_started_total", definition="order") == 1
        assert done.value("saga_oldest_unfinished_age_seconds") == 0
        assert done.value("saga_sagas", status="COMPLETED") == 1
        for step in ("create_order", "reserve_stock", "charge_payment", "confirm_order"):
            assert done.value("saga_step_duration_seconds_count", step=step, outcome="done") == 1
        assert done.value("saga_log_commit_seconds_count") > 0
        assert done.value("saga_log_writes_per_commit_count") > 0

        replay = client.post("/orders", json=ORDER, headers={"X-Idempotency-Key": "k-1"})
        assert replay.headers["idempotent-replayed"] == "true"
        declined = client.post("/orders", json=DECLINED).json()["id"]
        assert wait_terminal(client, declined)["status"] == "CANCELLED"
        after = poll(gw, lambda m: finished(m, "compensated") == 1)
        assert after.value("saga_idempotency_hits_total", layer="log") == 1
        assert after.value("saga_compensations_total", step="reserve_stock") == 1
        assert after.value("saga_compensations_total", step="create_order") == 1
        assert after.value("saga_step_duration_seconds_count", step="charge_payment",
                           outcome="refused") == 1  # fmt: skip
        assert not {order_id, declined} & after.label_values(), "labels never carry ids"

        # A service: its RPCs by method and code, on its own port.
        payment = scrape(metrics_url(s.services["payment"]))
        assert {"saga_service_rpc", "saga_service_rpc_duration_seconds"} <= payment.families
        calls = payment.value("saga_service_rpc_total", service="payment", method="Charge",
                              code="OK")  # fmt: skip
        assert calls == 2
        assert payment.value("saga_service_rpc_duration_seconds_count", method="Charge") == 2
        inventory = scrape(metrics_url(s.services["inventory"]))
        assert inventory.value("saga_service_rpc_total", method="Release", code="OK") == 1

        # The daemon: a saga left by a dead gateway is recovered, and counted so.
        assert s.gateway is not None
        s.gateway.terminate()
        daemon = s.recovery()
        with daemon:
            url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
            idle = scrape(url)
            assert set(DAEMON_NAMES) <= idle.families
            assert idle.has("saga_recovered_total", outcome="completed")
            assert idle.value("saga_recovered_total") == 0
            orphan = seed_orphan(s)
            recovered = poll(
                url, lambda m: m.value("saga_recovered_total", outcome="completed") == 1
            )
            assert recovered.value("saga_claimed_total") >= 1
            assert finished(recovered, "completed") == 1
            assert orphan not in recovered.label_values()
        report = s.audit()
        assert report.ok, report.violations


def seed_orphan(s: Stack) -> str:
    """A saga as a gateway leaves it when it dies right after its 201: durable, nothing run,
    owned by a process whose lease ran out long ago."""
    request = OrderRequest("cust_1", (Item("prod_1", 1, 500),))

    async def create() -> None:
        with s.log() as log:
            await log.create(
                NewSaga("orphan-1", ORDER_SAGA, request.to_payload(), trace_id="ab" * 16),
                owner="gateway@dead",
                lease_expires_ms=1,
                now_ms=int(time.time() * 1000),
            )

    asyncio.run(create())
    return "orphan-1"
