"""End to end, real processes: three `saga service` processes and `saga gateway` on free
ports, every SQLite file in tmp_path, real HTTP. The seed's examples end as its README
says and the services agree; idempotency holds with and without Redis (Redis killed and
flushed included); SIGTERM drains and hands unfinished sagas back; a crash right after
the saga is durable loses nothing; start-up mistakes are one clear line."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.saga_log import SagaFilter
from proto.inventory.v1 import inventory_pb2 as inv
from proto.order.v1 import order_pb2 as ordr
from proto.payment.v1 import payment_pb2 as pay
from tests.gateway.procs import Redis, Stack, stack, wait_terminal
from tests.support.procs import base_env, free_port
from tests.support.prom import scrape

pytestmark = pytest.mark.slow

SEED_50 = b'{"customer_id": "cust_123", "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.00}]}'  # noqa: E501
SEED_600 = b'{"customer_id": "cust_123", "items": [{"product_id": "prod_1", "quantity": 1, "price": 600.00}]}'  # noqa: E501
JSON = {"Content-Type": "application/json"}


def post(client: httpx.Client, body: bytes, key: str | None = None) -> httpx.Response:
    headers = dict(JSON)
    if key is not None:
        headers["X-Idempotency-Key"] = key
    return client.post("/orders", content=body, headers=headers)


def all_orders(client: httpx.Client) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = client.get("/orders", params=params).json()
        orders += page["orders"]
        cursor = page["next_cursor"]
        if cursor is None:
            return orders


def test_the_seed_examples_end_to_end(tmp_path: Path) -> None:
    with stack(tmp_path) as s, s.client() as client:
        orders, inventory, payment = s.order_stub(), s.inventory_stub(), s.payment_stub()
        stock0 = inventory.GetStock(inv.GetStockRequest(product_ids=["prod_1"])).available
        ok = post(client, SEED_50, "task-001")
        fail = post(client, SEED_600, "fail-001")
        short = post(client, b'{"customer_id": "c", "items": [{"product_id": "prod_3", '
                             b'"quantity": 1, "price": 5}]}')  # fmt: skip
        assert [r.status_code for r in (ok, fail, short)] == [201, 201, 201]

        confirmed = wait_terminal(client, ok.json()["id"])
        assert (confirmed["status"], confirmed["total"]) == ("CONFIRMED", 50.0)
        got = orders.GetOrder(ordr.GetOrderRequest(id=confirmed["id"])).order
        assert (got.status, got.total_cents) == (ordr.CONFIRMED, 5000)
        paid = payment.GetPayment(pay.GetPaymentRequest(order_id=confirmed["id"]))
        assert (paid.state, paid.amount_cents) == (pay.PAYMENT_STATE_CHARGED, 5000)

        declined = wait_terminal(client, fail.json()["id"])
        assert (declined["status"], declined["reason"]) == ("CANCELLED", "payment_declined")
        got = orders.GetOrder(ordr.GetOrderRequest(id=declined["id"])).order
        assert (got.status, got.reason) == (ordr.CANCELLED, "payment_declined")
        held = inventory.GetReservation(inv.GetReservationRequest(order_id=declined["id"]))
        assert held.state == inv.RESERVATION_STATE_RELEASED
        stock = inventory.GetStock(inv.GetStockRequest(product_ids=["prod_1"])).available
        assert stock["prod_1"] == stock0["prod_1"] - 1  # only the confirmed order holds one

        out = wait_terminal(client, short.json()["id"])
        assert (out["status"], out["reason"]) == ("CANCELLED", "out_of_stock")
        got = orders.GetOrder(ordr.GetOrderRequest(id=out["id"])).order
        assert (got.status, got.reason) == (ordr.CANCELLED, "out_of_stock")

        assert client.get("/readyz").status_code == 200
        assert "saga_http_requests_total" in client.get("/metrics").text
        report = s.audit()
        assert report.ok, report.violations


@pytest.mark.parametrize("with_redis", [False, True], ids=["log-only", "redis"])
def test_one_key_one_order(tmp_path: Path, with_redis: bool) -> None:
    redis = Redis(tmp_path) if with_redis else None
    # A generous budget per Redis call (see test_redis_chaos.py): the fast path is asserted.
    env = {"REDIS_URL": redis.url, "SAGA_REDIS_TIMEOUT_MS": "2000"} if redis else {}
    try:
        with stack(tmp_path, gateway_env=env) as s, s.client() as client:
            check_idempotency(s, client, redis)
    finally:
        if redis is not None:
            redis.kill()


def check_idempotency(s: Stack, client: httpx.Client, redis: Redis | None) -> None:
    keys = ["seq", "burst", "after-flush", "after-kill"]
    # Sequential replay.
    first = post(client, SEED_50, "seq")
    again = post(client, SEED_50, "seq")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert post(client, SEED_600, "seq").status_code == 422
    if redis is not None:
        assert redis.keys() >= 1  # the fast path is in use
        hits = scrape(f"{s.url}/metrics").value("saga_idempotency_hits_total", layer="redis")
        assert hits >= 1

    # 50 identical POSTs at once.
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: post(client, SEED_50, "burst"), range(50)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1

    if redis is not None:
        # Flushed between calls: the log still knows the key.
        made = post(client, SEED_50, "after-flush")
        redis.flushall()
        replay = post(client, SEED_50, "after-flush")
        assert (replay.status_code, replay.json()["id"]) == (201, made.json()["id"])
        assert post(client, SEED_600, "after-flush").status_code == 422
        # Killed mid-test: never a 5xx, never a second order.
        redis.kill()
        for _ in range(3):
            assert post(client, SEED_50, "burst").json()["id"] == answers[0].json()["id"]
        made = post(client, SEED_50, "after-kill")
        assert made.status_code == 201
        assert post(client, SEED_50, "after-kill").json()["id"] == made.json()["id"]
        assert post(client, SEED_600, "after-kill").status_code == 422
        metrics = client.get("/metrics").text
        assert "saga_idempotency_cache_errors_total" in metrics
    else:
        keys = keys[:2]

    orders = all_orders(client)
    assert len(orders) == len(keys)
    with s.log() as log:
        sagas = log.list_sagas_sync(SagaFilter(), limit=1000).items
        assert sorted(r.idempotency_key or "" for r in sagas) == sorted(keys)
    for order in orders:
        wait_terminal(client, order["id"])
    report = s.audit()
    assert report.ok, report.violations


def test_sigterm_drains_and_hands_unfinished_sagas_back(tmp_path: Path) -> None:
    slow = {"SAGA_ENV": "test", "SAGA_FAULTS": "Reserve:latency_ms:3000"}
    with stack(tmp_path, service_env=slow, gateway_env={"SAGA_DRAIN_S": "0.3"}) as s:
        gateway = s.gateway
        assert gateway is not None
        with s.client() as client:
            ids = [post(client, SEED_50, f"drain-{i}").json()["id"] for i in range(4)]
            deadline = time.monotonic() + 10
            while not all(
                any(
                    st["step"] == "reserve_stock"
                    for st in client.get(f"/sagas/{i}").json()["steps"]
                )
                for i in ids
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        # Every saga is inside its slow reservation: the drain runs out before it returns.
        assert gateway.terminate(timeout=20) == 0
        assert "Traceback" not in gateway.output()
        with s.log() as log:
            records = [log.get_sync(i) for i in ids]
            unfinished = [r for r in records if r is not None and not r.status.finished]
            assert unfinished, "the drain was expected to leave sagas unfinished"
            for record in unfinished:
                assert (record.owner, record.lease_expires_ms) == (None, 0)  # claimable now
        # The next gateway takes them over and finishes them.
        s.start_gateway(SAGA_DRAIN_S="2")
        with s.client() as client:
            assert {wait_terminal(client, i)["status"] for i in ids} == {"CONFIRMED"}
        report = s.audit()
        assert report.ok, report.violations


def test_a_crash_right_after_the_saga_is_durable_loses_nothing(tmp_path: Path) -> None:
    # A short lease: the dead gateway's claim runs out quickly and the next one takes over.
    with stack(tmp_path, start_gateway=False, gateway_env={"SAGA_LEASE_S": "1"}) as s:
        gateway = s.start_gateway(SAGA_ENV="test", SAGA_CRASH_AT="after_create")
        with s.client() as client, pytest.raises(httpx.HTTPError):
            post(client, SEED_50, "crash-1")  # the gateway dies before answering
        assert gateway.wait(10) == -9
        s.start_gateway()
        with s.client() as client:
            again = post(client, SEED_50, "crash-1")  # the client's retry
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert wait_terminal(client, again.json()["id"])["status"] == "CONFIRMED"
            assert len(all_orders(client)) == 1
        report = s.audit()
        assert report.ok, report.violations


# ---- start-up: one clear line, no traceback ----------------------------------------------


def run_gateway(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga", "gateway"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("saga: error: "), done.stderr
    assert all(not line.startswith("saga: error") for line in lines[:-1])
    for fragment in fragments:
        assert fragment in lines[-1]


def test_bad_settings_are_one_clear_line(tmp_path: Path) -> None:
    env = base_env(SAGA_DATA_DIR=str(tmp_path), SAGA_LEASE_S="soon")
    assert_one_clear_line(run_gateway(env, tmp_path), "SAGA_LEASE_S")
    env = base_env(SAGA_DATA_DIR=str(tmp_path), SAGA_CRASH_AT="after_create")
    assert_one_clear_line(run_gateway(env, tmp_path), "SAGA_CRASH_AT")


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(SAGA_DATA_DIR=str(tmp_path), HTTP_ADDR=f"127.0.0.1:{port}")
        assert_one_clear_line(run_gateway(env, tmp_path), f"127.0.0.1:{port}", "in use")
    assert not (tmp_path / "saga.db").exists()  # bound first, so nothing was opened


@pytest.mark.parametrize("kind", ["directory", "garbage", "no-folder"])
def test_an_unusable_log_file_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "saga.db"
    if kind == "directory":
        db.mkdir()
    elif kind == "garbage":
        db.write_bytes(b"this is not a database" * 512)
    else:
        (tmp_path / "file").write_text("")
        db = tmp_path / "file" / "saga.db"  # its folder is a file
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path),
        SAGA_LOG_DB_PATH=str(db),
        HTTP_ADDR=f"127.0.0.1:{free_port()}",
    )
    assert_one_clear_line(run_gateway(env, tmp_path), str(db))


def test_serves_one_line_then_stops_on_sigterm_with_0(tmp_path: Path) -> None:
    with stack(tmp_path) as s:
        gateway = s.gateway
        assert gateway is not None
        assert gateway.terminate(timeout=20) == 0
        line = f"gateway serving on {s.url} (saga log {s.data / 'saga.db'})"
        assert line in gateway.output()
        assert "Traceback" not in gateway.output()
