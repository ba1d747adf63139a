"""The order routes in process, against the real participant services: the seed's two
examples and an out-of-stock order end as the contract says (and the services agree),
reads, listing, idempotency, and every way a POST can be wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.core import Transition
from engine.memory_log import MemorySagaLog
from engine.saga_log import CreateResult, NewSaga, SagaFilter, SagaRecord
from orders.model import ORDER_SAGA
from orders.participants import ServiceAddresses
from orders.saga import OrderSagaPolicy
from proto.inventory.v1 import inventory_pb2 as inv
from proto.order.v1 import order_pb2 as ordr
from proto.payment.v1 import payment_pb2 as pay
from tests.gateway.conftest import (
    FAST,
    ORDER_50,
    ORDER_600,
    Api,
    gateway_settings,
    poll_until,
    running,
)
from tests.support.procs import free_port


def order(*items: tuple[str, Any, Any], customer: str = "cust_123") -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"product_id": p, "quantity": q, "price": price} for p, q, price in items],
    }


async def test_the_seed_success_path_confirms(api: Api) -> None:
    resp = await api.post_order(ORDER_50, key="task-001")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert resp.headers["location"] == f"/orders/{body['id']}"
    assert "idempotent-replayed" not in resp.headers
    assert body["status"] == "PENDING"
    assert (body["customer_id"], body["total"], body["reason"]) == ("cust_123", 50.0, None)
    assert body["items"] == [{"product_id": "prod_1", "quantity": 1, "price": 50.0}]
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]
    done = await api.wait_terminal(body["id"])
    assert (done["status"], done["reason"]) == ("CONFIRMED", None)
    p = api.participants
    got = await p.order.GetOrder(ordr.GetOrderRequest(id=body["id"]))
    assert (got.order.status, got.order.total_cents) == (ordr.CONFIRMED, 5000)
    charged = await p.payment.GetPayment(pay.GetPaymentRequest(order_id=body["id"]))
    assert (charged.state, charged.amount_cents) == (pay.PAYMENT_STATE_CHARGED, 5000)
    held = await p.inventory.GetReservation(inv.GetReservationRequest(order_id=body["id"]))
    assert held.state == inv.RESERVATION_STATE_RESERVED


async def test_the_seed_compensation_path_cancels_and_releases(api: Api) -> None:
    p = api.participants
    before = (await p.inventory.GetStock(inv.GetStockRequest(product_ids=["prod_1"]))).available
    resp = await api.post_order(ORDER_600, key="fail-001")
    assert resp.status_code == 201, resp.text
    done = await api.wait_terminal(resp.json()["id"])
    assert (done["status"], done["reason"], done["total"]) == (
        "CANCELLED",
        "payment_declined",
        600.0,
    )
    oid = done["id"]
    got = await p.order.GetOrder(ordr.GetOrderRequest(id=oid))
    assert (got.order.status, got.order.reason) == (ordr.CANCELLED, "payment_declined")
    held = await p.inventory.GetReservation(inv.GetReservationRequest(order_id=oid))
    assert held.state == inv.RESERVATION_STATE_RELEASED
    after = (await p.inventory.GetStock(inv.GetStockRequest(product_ids=["prod_1"]))).available
    assert after["prod_1"] == before["prod_1"]
    charged = await p.payment.GetPayment(pay.GetPaymentRequest(order_id=oid))
    assert charged.state != pay.PAYMENT_STATE_CHARGED


async def test_out_of_stock_cancels_without_charging(api: Api) -> None:
    resp = await api.post_order(order(("prod_3", 1, 5)))
    assert resp.status_code == 201, resp.text
    done = await api.wait_terminal(resp.json()["id"])
    assert (done["status"], done["reason"]) == ("CANCELLED", "out_of_stock")
    paid = await api.participants.payment.GetPayment(pay.GetPaymentRequest(order_id=done["id"]))
    assert paid.state == pay.PAYMENT_STATE_NONE


async def test_money_is_exact(api: Api) -> None:
    resp = await api.client.post(
        "/orders",
        content=b'{"customer_id":"c","items":[{"product_id":"prod_1","quantity":3,"price":0.10},'
        b'{"product_id":"prod_2","quantity":1,"price":19.99}]}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["total"] == 20.29  # 30 + 1999 cents, not 20.290000000000003
    assert [i["price"] for i in body["items"]] == [0.1, 19.99]
    record = await api.log.get(body["id"])
    assert record is not None
    payload = json.loads(record.payload)
    assert [i["unit_price_cents"] for i in payload["items"]] == [10, 1999]


async def test_reads_lists_and_pages(api: Api) -> None:
    ids = []
    for i in range(5):
        resp = await api.post_order(order(("prod_1", 1, 1 + i)))
        assert resp.status_code == 201
        ids.append(resp.json()["id"])
    bad = await api.post_order(order(("prod_3", 1, 1)))
    for oid in [*ids, bad.json()["id"]]:
        await api.wait_terminal(oid)
    got = await api.client.get(f"/orders/{ids[0]}")
    assert got.status_code == 200 and got.json()["id"] == ids[0]
    missing = await api.client.get("/orders/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "order_not_found")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await api.client.get("/orders", params=params)
        assert page.status_code == 200, page.text
        seen += [o["id"] for o in page.json()["orders"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [bad.json()["id"], *reversed(ids)]  # newest first, each once
    cancelled = (await api.client.get("/orders", params={"status": "CANCELLED"})).json()
    assert [o["id"] for o in cancelled["orders"]] == [bad.json()["id"]]
    confirmed = (await api.client.get("/orders?status=CONFIRMED&limit=100")).json()
    assert sorted(o["id"] for o in confirmed["orders"]) == sorted(ids)
    assert confirmed["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=SHIPPED", "invalid_request"),
        ("status=", "invalid_request"),
        ("limit=0", "invalid_request"),
        ("limit=101", "invalid_request"),
        ("limit=ten", "invalid_request"),
        ("cursor=garbage", "invalid_cursor"),
        ("cursor=s", "invalid_cursor"),
    ],
)
async def test_bad_list_queries_are_400(api: Api, query: str, code: str) -> None:
    resp = await api.client.get(f"/orders?{query}")
    assert resp.status_code == 400
    assert resp.json()["error"] == code and resp.json()["message"]


async def test_the_saga_shows_its_log(api: Api) -> None:
    resp = await api.post_order(ORDER_600)
    oid = resp.json()["id"]
    await api.wait_terminal(oid)
    saga = (await api.client.get(f"/sagas/{oid}")).json()
    assert (saga["id"], saga["definition"], saga["status"]) == (oid, "order", "COMPENSATED")
    assert saga["reason"] == "payment_declined" and saga["epoch"] >= 1
    steps = saga["steps"]
    assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["phase"] == "created" and steps[-1]["phase"] == "compensated"
    assert ("charge_payment", "refused", "payment_declined") in [
        (s["step"], s["phase"], s["error"]) for s in steps
    ]
    assert set(steps[0]) == {"seq", "step", "phase", "attempt", "at", "error", "trace_id"}
    missing = await api.client.get("/sagas/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "saga_not_found")


async def test_a_traceparent_names_the_saga_s_trace(api: Api) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = await api.post_order(traceparent=f"00-{trace}-00f067aa0ba902b7-01")
    saga = (await api.client.get(f"/sagas/{resp.json()['id']}")).json()
    assert saga["trace_id"] == trace


# ---- idempotency -------------------------------------------------------------------------


async def test_a_replay_answers_the_same_order(api: Api) -> None:
    first = await api.post_order(key="k-1")
    await api.wait_terminal(first.json()["id"])
    # Same order written differently (50 vs 50.00, other key order): the same request.
    again = await api.client.post(
        "/orders",
        content=b'{"items":[{"price":50,"quantity":1,"product_id":"prod_1"}],"customer_id":"cust_123"}',
        headers={"Content-Type": "application/json", "Idempotency-Key": "k-1"},
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "CONFIRMED"  # the order as it is now


async def test_concurrent_identical_posts_make_one_order(api: Api) -> None:
    answers = await asyncio.gather(*(api.post_order(ORDER_50, key="burst") for _ in range(50)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 49
    page = await api.log.list_sagas(SagaFilter(definition=ORDER_SAGA), limit=100)
    assert len(page.items) == 1
    await api.wait_terminal(answers[0].json()["id"])


async def test_a_key_reused_with_another_body_is_422(api: Api) -> None:
    first = await api.post_order(ORDER_50, key="k-2")
    assert first.status_code == 201
    other = await api.post_order(ORDER_600, key="k-2")
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    page = await api.log.list_sagas(SagaFilter(), limit=10)
    assert len(page.items) == 1
    await api.wait_terminal(first.json()["id"])


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Idempotency-Key": ""},
        {"X-Idempotency-Key": "   "},
        {"X-Idempotency-Key": "a" * 256},
        {"X-Idempotency-Key": "a", "Idempotency-Key": "b"},
    ],
)
async def test_bad_idempotency_keys_are_400(api: Api, headers: dict[str, str]) -> None:
    resp = await api.client.post("/orders", json=ORDER_50, headers=headers)
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")


# ---- malformed POSTs ---------------------------------------------------------------------


def item(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"product_id": "prod_1", "quantity": 1, "price": 50.0}
    base.update(kw)
    return {"customer_id": "c", "items": [base]}


def raw(
    customer: str = '"c"', product: str = '"p"', quantity: str = "1", price: str = "1"
) -> bytes:
    """A body written by hand, for what json.dumps cannot write (NaN, 1e400, long ints)."""
    line = f'{{"product_id": {product}, "quantity": {quantity}, "price": {price}}}'
    return f'{{"customer_id": {customer}, "items": [{line}]}}'.encode()


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[" * 50_000, "invalid_json"),
    (b"null", "invalid_request"),
    (b"[]", "invalid_request"),
    (b'"order"', "invalid_request"),
    (b"{}", "invalid_request"),
    (b'{"customer_id": "c"}', "invalid_request"),
    (raw(customer='""'), "invalid_request"),
    (raw(customer="7"), "invalid_request"),
    (b'{"customer_id": "c", "items": []}', "invalid_request"),
    (b'{"customer_id": "c", "items": {}}', "invalid_request"),
    (b'{"customer_id": "c", "items": [1]}', "invalid_request"),
    (b'{"customer_id": "c", "items": [{"product_id": "p", "quantity": 1}]}', "invalid_request"),
    (json.dumps(item(quantity="1")).encode(), "invalid_request"),
    (json.dumps(item(quantity=True)).encode(), "invalid_request"),
    (json.dumps(item(price="50.00")).encode(), "invalid_request"),
    (json.dumps(item(price=None)).encode(), "invalid_request"),
    (json.dumps(item(product_id=None)).encode(), "invalid_request"),
    (json.dumps(item(product_id="")).encode(), "invalid_item"),
    (json.dumps(item(product_id=" ")).encode(), "invalid_item"),
    (json.dumps(item(product_id="x" * 129)).encode(), "invalid_item"),
    (json.dumps(item(product_id="a\u0000b")).encode(), "invalid_item"),
    (json.dumps(item(quantity=0)).encode(), "invalid_item"),
    (json.dumps(item(quantity=-1)).encode(), "invalid_item"),
    (json.dumps(item(quantity=1.5)).encode(), "invalid_item"),
    (json.dumps(item(quantity=1_000_001)).encode(), "invalid_item"),
    (raw(quantity="1" + "0" * 5000), "invalid_item"),
    (json.dumps(item(price=0)).encode(), "invalid_item"),
    (json.dumps(item(price=-5)).encode(), "invalid_item"),
    (json.dumps(item(price=50.001)).encode(), "invalid_item"),
    (raw(price="NaN"), "invalid_item"),
    (raw(price="Infinity"), "invalid_item"),
    (raw(price="1e400"), "invalid_item"),
    (raw(price="1e-400"), "invalid_item"),
    (raw(price="-Infinity"), "invalid_item"),
    (raw(quantity="NaN"), "invalid_item"),
    (json.dumps({"customer_id": "c", "items": [item()["items"][0]] * 2}).encode(), "invalid_item"),
    (json.dumps({"customer_id": "c", "items": [
        {"product_id": f"p{i}", "quantity": 1, "price": 1} for i in range(1001)]}).encode(),
     "invalid_request"),
    (json.dumps({"customer_id": "c", "items": [
        {"product_id": f"p{i}", "quantity": 1_000_000, "price": 92233720368547.75} for i in range(2)
    ]}).encode(), "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
async def test_malformed_orders_are_400_and_write_nothing(api: Api, body: bytes, code: str) -> None:
    resp = await api.client.post(
        "/orders", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == code
    assert isinstance(resp.json()["message"], str) and resp.json()["message"]
    assert (await api.log.list_sagas(SagaFilter(), limit=1)).items == ()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_other_media_types_are_415(api: Api, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await api.client.post("/orders", content=json.dumps(ORDER_50), headers=headers)
    assert (resp.status_code, resp.json()["error"]) == (415, "unsupported_media_type")


async def test_an_oversized_body_is_413_by_length_and_by_stream(api: Api) -> None:
    big = b'{"customer_id": "' + b"x" * 70_000 + b'"}'
    resp = await api.client.post(
        "/orders", content=big, headers={"Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.json()["error"]) == (413, "payload_too_large")

    async def chunks() -> Any:  # no Content-Length: the streamed size decides
        for _ in range(10):
            yield b"x" * 10_000

    resp = await api.client.post(
        "/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.json()["error"]) == (413, "payload_too_large")
    assert (await api.log.list_sagas(SagaFilter(), limit=1)).items == ()


async def test_unknown_routes_and_methods_keep_the_envelope(api: Api) -> None:
    resp = await api.client.get("/nowhere")
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    resp = await api.client.delete("/orders")
    assert (resp.status_code, resp.json()["error"]) == (405, "method_not_allowed")
    assert "POST" in resp.headers["allow"]


async def test_a_busy_gateway_with_a_long_queue_is_503_overloaded(tmp_path: Path) -> None:
    # Nobody listens at the services' addresses: the one saga the runner may drive keeps
    # retrying, the next waits in the log, and the one after that is refused unwritten.
    nowhere = ("127.0.0.1", free_port())
    settings = gateway_settings(
        tmp_path,
        ServiceAddresses(nowhere, nowhere, nowhere),
        runner_capacity=1,
        max_queue=1,
    )
    patient = OrderSagaPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.1)
    async with running(settings, policy=patient) as api:
        driven = await api.post_order(order(("prod_1", 1, 1)))
        queued = await api.post_order(order(("prod_1", 1, 2)), key="queued")
        assert (driven.status_code, queued.status_code) == (201, 201)
        refused = await api.post_order(order(("prod_1", 1, 3)))
        assert (refused.status_code, refused.json()["error"]) == (503, "overloaded")
        assert refused.headers["retry-after"].isdigit()
        later = await api.post_order(order(("prod_1", 1, 3)), key="later")
        assert later.status_code == 503
        # A client retrying an order it already placed gets it, however full the queue.
        replay = await api.post_order(order(("prod_1", 1, 2)), key="queued")
        assert replay.status_code == 201, replay.text
        assert replay.json()["id"] == queued.json()["id"]
        assert replay.headers["idempotent-replayed"] == "true"
        reused = await api.post_order(order(("prod_1", 1, 9)), key="queued")
        assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
        page = await api.log.list_sagas(SagaFilter(), limit=10)
        assert len(page.items) == 2
        metrics = (await api.client.get("/metrics")).text
        assert 'saga_orders_refused_total{code="overloaded"} 2.0' in metrics


async def test_concurrent_posts_never_queue_past_the_bound(tmp_path: Path) -> None:
    # Every POST used to count the queue and then write: ten at once all saw it empty and
    # all queued. Places are taken before the writes now (engine/admission.py).
    nowhere = ("127.0.0.1", free_port())
    settings = gateway_settings(
        tmp_path, ServiceAddresses(nowhere, nowhere, nowhere), runner_capacity=1, max_queue=3
    )
    patient = OrderSagaPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.1)
    async with running(settings, policy=patient) as api:
        assert (await api.post_order(order(("prod_1", 1, 1)))).status_code == 201  # driven
        burst = await asyncio.gather(
            *(api.post_order(order(("prod_1", 1, 2 + i))) for i in range(10))
        )
        codes = sorted(r.status_code for r in burst)
        assert codes == [201] * 3 + [503] * 7
        page = await api.log.list_sagas(SagaFilter(), limit=20)
        assert len(page.items) == 4


class SlowLog(MemorySagaLog):
    """Creating a saga waits until the test says so: time for a client to hang up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.proceed = asyncio.Event()

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        self.entered.set()
        await self.proceed.wait()
        return await super().create(
            new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
        )


async def test_a_client_hanging_up_mid_create_does_not_strand_the_saga(
    tmp_path: Path, stack: ServiceAddresses
) -> None:
    log = SlowLog()
    async with running(gateway_settings(tmp_path, stack), log=log, policy=FAST) as api:
        request = asyncio.create_task(api.post_order(key="gone"))
        await log.entered.wait()
        request.cancel()  # what a server does to a request whose client went away
        with contextlib.suppress(asyncio.CancelledError):
            await request
        log.proceed.set()

        async def made() -> bool:
            return bool((await log.list_sagas(SagaFilter(), limit=1)).items)

        await poll_until(made)
        (record,) = (await log.list_sagas(SagaFilter(), limit=1)).items
        # Driven to its end by the runner, not left owned and undriven.
        assert (await api.wait_terminal(record.id))["status"] == "CONFIRMED"


class BrokenLog(MemorySagaLog):
    async def get(self, saga_id: str) -> SagaRecord | None:
        raise RuntimeError("a bug")


async def test_a_bug_is_a_500_with_the_envelope(tmp_path: Path, stack: ServiceAddresses) -> None:
    async with running(gateway_settings(tmp_path, stack), log=BrokenLog(), policy=FAST) as api:
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            resp = await client.get("/orders/any")
        assert resp.status_code == 500
        assert resp.json() == {
            "error": "internal",
            "message": "an internal error occurred; it has been logged",
        }
