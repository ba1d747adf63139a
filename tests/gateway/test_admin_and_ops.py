"""Operators' routes (auth, cancel, retry), readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.core import SagaStatus
from orders.participants import ServiceAddresses
from services.common.faults import FaultKind, FaultPlan, FaultRule
from tests.gateway.conftest import (
    FAST,
    ORDER_50,
    TOKEN,
    Api,
    gateway_settings,
    poll_until,
    running,
    services,
    services_but_payment,
    wait_status,
    wait_step,
)
from tests.services.helpers import serving
from tests.support.procs import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A cancel must land while one slow call is in flight: 3 s of it, so that a stalled moment
# on a loaded machine cannot let the saga move on first, within a step timeout above it.
SLOW_MS = 3000
PATIENT = replace(FAST, step_timeout_s=10)


async def test_admin_routes_are_closed_without_a_token(
    tmp_path: Path, stack: ServiceAddresses
) -> None:
    async with running(gateway_settings(tmp_path, stack, admin_token=None), policy=FAST) as api:
        for action in ("retry", "cancel"):
            resp = await api.client.post(f"/sagas/any/{action}", headers=AUTH)
            assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "unauthorized"),
        (b"Bearer", 401, "unauthorized"),
        (f"Basic {TOKEN}".encode(), 401, "unauthorized"),
        (b"Bearer wrong", 403, "forbidden"),
        ("Bearer \u00e9t\u00e9".encode("latin-1"), 403, "forbidden"),
        (f"Bearer {TOKEN}".encode(), 404, "saga_not_found"),
    ],
)
async def test_admin_auth(api: Api, authorization: bytes | None, status: int, code: str) -> None:
    headers = {} if authorization is None else {b"Authorization": authorization}
    for action in ("retry", "cancel"):
        resp = await api.client.post(f"/sagas/nope/{action}", headers=headers)
        assert (resp.status_code, resp.json()["error"]) == (status, code)
        if status == 401:
            assert resp.headers["www-authenticate"] == "Bearer"


async def test_finished_sagas_cannot_be_changed(api: Api) -> None:
    oid = (await api.post_order()).json()["id"]
    await api.wait_terminal(oid)
    cancel = await api.client.post(f"/sagas/{oid}/cancel", headers=AUTH)
    assert (cancel.status_code, cancel.json()["error"]) == (409, "conflict")
    assert "saga_finished" in cancel.json()["message"]
    retry = await api.client.post(f"/sagas/{oid}/retry", headers=AUTH)
    assert (retry.status_code, retry.json()["error"]) == (409, "conflict")
    assert "not_parked" in retry.json()["message"]


async def test_an_operator_cancels_before_the_pivot(tmp_path: Path) -> None:
    slow = FaultPlan((FaultRule("Reserve", FaultKind.LATENCY_MS, SLOW_MS),))
    async with (
        services(tmp_path, {"inventory": {"faults": slow}}) as addresses,
        running(gateway_settings(tmp_path, addresses), policy=PATIENT) as api,
    ):
        oid = (await api.post_order(ORDER_50)).json()["id"]
        await wait_step(api.log, oid, "reserve_stock")  # the slow reservation is on its way
        resp = await api.client.post(f"/sagas/{oid}/cancel", headers=AUTH)
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "COMPENSATING"
        done = await api.wait_terminal(oid)
        assert (done["status"], done["reason"]) == ("CANCELLED", "cancelled_by_operator")
        again = await api.client.post(f"/sagas/{oid}/cancel", headers=AUTH)
        assert again.status_code == 409


async def test_past_the_pivot_a_cancel_is_409(tmp_path: Path) -> None:
    slow = FaultPlan((FaultRule("UpdateOrderStatus", FaultKind.LATENCY_MS, SLOW_MS),))
    async with (
        services(tmp_path, {"order": {"faults": slow}}) as addresses,
        running(gateway_settings(tmp_path, addresses), policy=PATIENT) as api,
    ):
        oid = (await api.post_order(ORDER_50)).json()["id"]
        await wait_step(api.log, oid, "confirm_order")  # charged: past the pivot
        resp = await api.client.post(f"/sagas/{oid}/cancel", headers=AUTH)
        assert (resp.status_code, resp.json()["error"]) == (409, "conflict")
        assert "past_pivot" in resp.json()["message"]
        assert (await api.wait_terminal(oid))["status"] == "CONFIRMED"


async def test_a_parked_saga_is_retried_to_the_end(tmp_path: Path) -> None:
    # Payment is down: the pivot runs out of attempts and the saga needs attention; once
    # payment is up, an operator's retry finishes it.
    async with services_but_payment(tmp_path) as (addresses, payment):
        policy = replace(FAST, park_after=2)
        async with running(gateway_settings(tmp_path, addresses), policy=policy) as api:
            oid = (await api.post_order(ORDER_50)).json()["id"]
            await wait_status(api.log, oid, SagaStatus.NEEDS_ATTENTION)
            pending = (await api.client.get(f"/orders/{oid}")).json()
            assert (pending["status"], pending["reason"]) == ("PENDING", None)
            saga = (await api.client.get(f"/sagas/{oid}")).json()
            assert saga["status"] == "NEEDS_ATTENTION" and "charge_payment" in saga["reason"]
            async with serving(payment):

                async def ready() -> bool:  # grpc's reconnect backoff has run out
                    return (await api.client.get("/readyz")).status_code == 200

                await poll_until(ready)
                resp = await api.client.post(f"/sagas/{oid}/retry", headers=AUTH)
                assert resp.status_code == 202, resp.text
                assert (await api.wait_terminal(oid))["status"] == "CONFIRMED"


# ---- readiness, liveness, metrics, OpenAPI -----------------------------------------------


async def test_ready_when_the_log_and_the_services_are(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"saga_log": "ok", "order": "ok", "payment": "ok", "inventory": "ok"},
    }


async def test_not_ready_says_what_failed(tmp_path: Path, stack: ServiceAddresses) -> None:
    down = replace(stack, payment=("127.0.0.1", free_port()))
    async with running(gateway_settings(tmp_path, down, ready_timeout_s=10.0), policy=FAST) as api:
        resp = await api.client.get("/readyz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["error"] == "not_ready" and "payment" in body["message"]
        assert body["checks"]["payment"] != "ok"
        assert body["checks"]["order"] == body["checks"]["saga_log"] == "ok"
        assert (await api.client.get("/healthz")).status_code == 200


async def test_metrics_count_requests_by_route_and_replays_by_layer(api: Api) -> None:
    first = await api.post_order(key="m-1")
    await api.post_order(key="m-1")
    await api.client.get(f"/orders/{first.json()['id']}")
    await api.client.get("/orders/unknown")
    await api.client.get("/nope")
    resp = await api.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for line in (
        'saga_http_requests_total{method="POST",route="/orders",status="201"} 2.0',
        'saga_http_requests_total{method="GET",route="/orders/{order_id}",status="200"} 1.0',
        'saga_http_requests_total{method="GET",route="/orders/{order_id}",status="404"} 1.0',
        'saga_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
        'saga_idempotency_hits_total{layer="log"} 1.0',
        "saga_orders_created_total 1.0",
        'saga_started_total{definition="order"} 1.0',
    ):
        assert line in text, line
    assert first.json()["id"] not in text  # labels never carry ids
    await api.wait_terminal(first.json()["id"])


async def test_each_app_has_its_own_registry(tmp_path: Path, stack: ServiceAddresses) -> None:
    async with (
        running(gateway_settings(tmp_path / "a", stack), policy=FAST) as a,
        running(gateway_settings(tmp_path / "b", stack), policy=FAST) as b,
    ):
        await a.client.get("/healthz")
        text = (await b.client.get("/metrics")).text
        assert 'route="/healthz"' not in text


async def test_openapi_describes_every_route_and_its_errors(api: Api) -> None:
    doc: dict[str, Any] = (await api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert {(p, m) for p, ops in paths.items() for m in ops} == {
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{order_id}", "get"),
        ("/sagas/{saga_id}", "get"),
        ("/sagas/{saga_id}/retry", "post"),
        ("/sagas/{saga_id}/cancel", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    }
    post = paths["/orders"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/OrderIn"}
    schemas = doc["components"]["schemas"]
    assert {"OrderIn", "ItemIn", "OrderOut", "ErrorOut", "SagaOut"} <= set(schemas)
    assert set(post["responses"]) >= {"201", "400", "413", "415", "422", "500", "503"}
    assert "Location" in post["responses"]["201"]["headers"]
    for ops in paths.values():
        for op in ops.values():
            assert "422" not in op["responses"] or op is post  # FastAPI's 422 is remapped
            for status, response in op["responses"].items():
                if status >= "400" and "content" in response:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.rsplit("/", 1)[1] in ("ErrorOut", "ReadyProblem")
