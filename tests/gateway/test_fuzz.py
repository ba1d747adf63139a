"""Property-based: whatever a client sends to any route (method, path, query string,
headers, body), the gateway never answers 5xx, and every 4xx carries the envelope.
Plus the money rules as properties of the pure parser."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ApiError
from gateway.order_input import MAX_QUANTITY, parse_order
from orders.model import OrderRequest
from tests.gateway.conftest import TOKEN, Api

# 150 examples, the same on every run unless FUZZ_SEARCH=1 (tests/conftest.py).
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ids = st.text(min_size=0, max_size=40).filter(
    lambda t: "/" not in t and "?" not in t and "#" not in t
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
prices = (
    st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str)
    | st.integers(-10, 10**20).map(str)
    | st.sampled_from(["50.00", "600.00", "0.01", "1e2", "1E-2", "19.999", "NaN", "-0", "0"])
)
quantities = st.integers(-5, 2_000_000).map(str) | st.sampled_from(["1.0", "true", "null", '"1"'])
products = st.sampled_from(["prod_1", "prod_2", "prod_3", "nope", ""]) | st.text(max_size=5)


@st.composite
def near_orders(draw: st.DrawFn) -> bytes:
    """Bodies close to a valid order, so the deeper rules are reached, written by hand so
    that NaN, 1e400 and 19.999 arrive as the client wrote them."""
    lines = draw(
        st.lists(
            st.tuples(products, quantities, prices).map(
                lambda t: (
                    f'{{"product_id": {json.dumps(t[0])}, "quantity": {t[1]}, "price": {t[2]}}}'
                )
            ),
            max_size=3,
        )
    )
    customer = draw(st.sampled_from(['"cust_1"', '""', "1", "null", '" "']))
    return f'{{"customer_id": {customer}, "items": [{", ".join(lines)}]}}'.encode()


bodies = near_orders() | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200)
paths = st.sampled_from(
    ["/orders", "/orders/{}", "/sagas/{}", "/sagas/{}/retry", "/sagas/{}/cancel", "/healthz",
     "/readyz", "/metrics", "/openapi.json", "/{}", "/orders/{}/x"]
)  # fmt: skip
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(paths)
    if "{}" in path:
        path = path.format(quote(draw(ids), safe=""))
    headers: dict[bytes, bytes] = {}
    content_type = draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None])
        | header_text
    )
    if content_type is not None:
        headers[b"content-type"] = content_type.encode("latin-1")
    for name in ("x-idempotency-key", "idempotency-key", "authorization", "traceparent"):
        if draw(st.booleans()):
            value = draw(header_text | st.just(f"Bearer {TOKEN}"))
            headers[name.encode()] = value.encode("latin-1").strip()
    query = draw(
        st.dictionaries(st.sampled_from(["status", "limit", "cursor", "x"]), st.text(max_size=12),
                        max_size=3)
    )  # fmt: skip
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    return {"method": method, "url": path, "params": query, "headers": headers,
            "content": draw(bodies) if method in ("POST", "PUT", "PATCH") else None}  # fmt: skip


def assert_answer(status: int, content: bytes, method: str) -> None:
    assert status < 500, content
    if status >= 400 and method != "HEAD":
        body = json.loads(content)
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]


@FUZZ
@given(request=requests())
async def test_no_request_is_a_5xx(api: Api, request: dict[str, Any]) -> None:
    resp = await api.client.request(**request)
    assert_answer(resp.status_code, resp.content, request["method"])


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [("POST", "/orders", b"x-note"), ("GET", "/healthz", b"traceparent"),
     ("GET", "/orders", b"x-idempotency-key")],
)  # fmt: skip
async def test_a_header_that_is_not_utf8_is_a_400(
    api: Api, method: str, path: str, name: bytes
) -> None:
    # Found by the fuzz test above: a non-UTF-8 byte then a lone backslash made the
    # tracing middleware raise (a 500) before any of the gateway's code ran.
    headers = {b"content-type": b"application/json", name: b"\x80\\"}
    resp = await api.client.request(method, path, content=b"{}", headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"
    assert name.decode() in resp.json()["message"]
    assert (await api.client.get("/healthz")).status_code == 200


@FUZZ
@given(body=bodies, key=st.none() | st.sampled_from(["k1", "k2"]))
async def test_no_order_body_is_a_5xx(api: Api, body: bytes, key: str | None) -> None:
    headers = {"Content-Type": "application/json"} | ({"X-Idempotency-Key": key} if key else {})
    resp = await api.client.post("/orders", content=body, headers=headers)
    assert_answer(resp.status_code, resp.content, "POST")
    if resp.status_code == 201:
        assert resp.json()["status"] in ("PENDING", "CONFIRMED", "CANCELLED")


# ---- the parser's money rules ------------------------------------------------------------


def one_line(price: str, quantity: str = "1") -> bytes:
    return (
        f'{{"customer_id": "c", "items": [{{"product_id": "p", "quantity": {quantity}, '
        f'"price": {price}}}]}}'
    ).encode()


@given(cents=st.integers(1, 10**12), quantity=st.integers(1, MAX_QUANTITY))  # total < 2**63
def test_prices_with_two_decimals_are_exact_cents(cents: int, quantity: int) -> None:
    text = f"{cents // 100}.{cents % 100:02d}"
    order = parse_order(one_line(text, str(quantity)))
    assert order.items[0].unit_price_cents == cents
    assert order.total_cents == cents * quantity


def outcome(body: bytes) -> OrderRequest | ApiError:
    try:
        return parse_order(body)
    except ApiError as err:
        return err


@given(price=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**6), places=3))
def test_a_third_decimal_is_refused_not_rounded(price: Decimal) -> None:
    got = outcome(one_line(str(price)))
    if isinstance(got, ApiError):
        assert (got.status, got.code) == (400, "invalid_item")
        assert price * 100 != (price * 100).to_integral_value()
    else:
        assert Decimal(got.items[0].unit_price_cents) == price * 100


@given(body=bodies)
def test_the_parser_only_ever_refuses_with_a_400(body: bytes) -> None:
    got = outcome(body)  # anything else raised fails the test
    if isinstance(got, ApiError):
        assert got.status == 400
        assert got.code in ("invalid_json", "invalid_request", "invalid_item")
    else:  # what it accepts survives the trip through the saga's payload
        assert OrderRequest.from_payload(got.to_payload()) == got
