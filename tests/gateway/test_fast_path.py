"""POST /orders is served in front of FastAPI's routing (gateway/fast_orders.py); the
FastAPI route answers the same requests when that path steps aside (under a root path).
Every answer, successes and each kind of refusal, must be the same from both, and both
must be counted under the route's template."""

from __future__ import annotations

import json

import httpx

from tests.gateway.conftest import ORDER_50, Api

# (body, headers) of one request of each kind the route answers.
_CASES: tuple[tuple[bytes, dict[str, str]], ...] = (
    (json.dumps(ORDER_50).encode(), {"X-Idempotency-Key": "same-order"}),  # 201, replayed
    (b"{", {}),  # 400 invalid_json
    (json.dumps({**ORDER_50, "items": []}).encode(), {}),  # 400 invalid_request
    (json.dumps(ORDER_50).encode(), {"content-type": "text/plain"}),  # 415
    (json.dumps({**ORDER_50, "customer_id": "other"}).encode(),
     {"Idempotency-Key": "same-order"}),  # 422 idempotency_key_reused
    (b" " * (64 * 1024 + 1), {}),  # 413 from Content-Length
    (json.dumps(ORDER_50).encode(), {"X-Idempotency-Key": "a", "Idempotency-Key": "b"}),  # 400
)  # fmt: skip


def _seen(resp: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    return resp.status_code, resp.content, dict(resp.headers)


async def test_the_fast_path_answers_as_the_route(api: Api) -> None:
    first = await api.post_order(key="same-order")
    assert first.status_code == 201, first.text
    transport = httpx.ASGITransport(app=api.app, root_path="/behind-a-proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as routed:
        for body, headers in _CASES:
            sent = {"content-type": "application/json", **headers}
            # Only the replay can change between the two reads (its saga runs): read the
            # order's state through the fast path last, so both see a settled saga.
            if body == json.dumps(ORDER_50).encode() and "X-Idempotency-Key" in headers:
                await api.wait_terminal(first.json()["id"])
            fast = await api.client.post("/orders", content=body, headers=sent)
            slow = await routed.post("/orders", content=body, headers=sent)
            assert _seen(fast) == _seen(slow), (headers, fast.text, slow.text)
            assert fast.status_code != 500, fast.text
    metrics = api.app.state.gateway.metrics.render().decode()
    counted = [
        line
        for line in metrics.splitlines()
        # A 413 from Content-Length is answered before any routing: "unmatched" as before.
        if line.startswith("saga_http_requests_total")
        and 'method="POST"' in line
        and 'status="413"' not in line
    ]
    assert counted and all('route="/orders"' in line for line in counted), counted
    one_order = await api.client.get("/orders", params={"limit": 100})
    assert len(one_order.json()["orders"]) == 1  # every 201 was the same order
