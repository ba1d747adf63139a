"""The explorer's pages over HTTP (no browser): what each shows, that typed text is text,
that every bad input and unknown saga or page is the page's own error (never a 500, never
the API's JSON), the security headers, and /docs served from the gateway itself. Against
both log backends."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.memory_log import MemorySagaLog
from engine.saga_log import NewSaga
from gateway.ui import CSP
from orders.model import ORDER_SAGA, Item, OrderRequest
from tests.gateway.conftest import ORDER_50, ORDER_600, TOKEN, gateway_settings, services
from tests.ui.conftest import Served, serve

XSS = "<img src=x onerror=alert(1)>"
XSS_ORDER = {
    "customer_id": XSS,
    "items": [{"product_id": "<script>alert(2)</script>", "quantity": 1, "price": 5.00}],
}
TRACE_URL = "http://grafana.test/explore?left={trace_id}"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)


@pytest.fixture(params=["sqlite", "memory"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    log = MemorySagaLog() if request.param == "memory" else None
    async with services(tmp_path) as addresses:
        settings = gateway_settings(tmp_path, addresses, ui_trace_url=TRACE_URL)
        async with serve(settings, log=log) as served:
            yield served


async def settled(gw: Served, order_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            record = await gw.log.get(order_id)
            if record is not None and record.status.finished:
                return
            await asyncio.sleep(0.02)


def page(resp: httpx.Response, status: int = 200) -> str:
    """The body of an explorer page, checked to be one: HTML, its status, its headers."""
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"].startswith("text/html"), resp.headers
    assert resp.headers["content-security-policy"] == CSP
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    text = resp.text
    assert text.lstrip().lower().startswith("<!doctype html>")
    assert not INLINE_SCRIPT.search(text), "an inline script: the CSP would block it"
    return text


async def test_the_overview_shows_counts_chart_attention_queue_and_readiness(gw: Served) -> None:
    ids = [await gw.order(ORDER_50), await gw.order(ORDER_600)]
    for oid in ids:
        await settled(gw, oid)
    text = page(await gw.client.get("/ui"))
    assert 'data-count="COMPLETED">1<' in text and 'data-count="COMPENSATED">1<' in text
    assert "accepted (2)" in text and "finished (2)" in text
    assert "Needs attention" in text and "waiting in the log" in text
    for service in ("saga_log", "order", "payment", "inventory"):
        assert f"<th>{service}</th>" in text
    assert text.count('class="ok">ready<') == 4
    root = await gw.client.get("/")
    assert (root.status_code, root.headers["location"]) == (307, "/ui")


async def test_the_list_pages_newest_first_and_filters(gw: Served) -> None:
    ids = [await gw.order(ORDER_50, key=f"list-{i}") for i in range(3)]
    for oid in ids:
        await settled(gw, oid)
    text = page(await gw.client.get("/ui/sagas?limit=2"))
    rows = re.findall(r'<tr data-id="([^"]+)"', text)
    assert rows == [ids[2], ids[1]]
    cursor = html.unescape(re.search(r'rel="next" href="([^"]+)"', text).group(1))  # type: ignore[union-attr]
    rest = page(await gw.client.get(cursor))
    assert re.findall(r'<tr data-id="([^"]+)"', rest) == [ids[0]]
    none = page(await gw.client.get("/ui/sagas?status=RUNNING&status=needs_attention"))
    assert "No saga matches these filters." in none
    young = page(await gw.client.get("/ui/sagas?newer_than=1h&definition=order"))
    assert len(re.findall(r'<tr data-id="[^"]+"', young)) == 3
    old = page(await gw.client.get("/ui/sagas?older_than=1h"))
    assert "No saga matches these filters." in old


async def test_search_finds_a_saga_by_id_key_or_customer(gw: Served) -> None:
    mine = await gw.order({**ORDER_50, "customer_id": "cust_search"}, key="key-search")
    other = await gw.order(ORDER_50)
    for text, why in ((mine, "saga id"), ("key-search", "idempotency key"),
                      ("cust_search", "customer id")):  # fmt: skip
        found = page(await gw.client.get("/ui/sagas", params={"q": text}))
        assert re.findall(r'<tr data-id="([^"]+)"', found) == [mine], text
        assert f'<span class="match">{why}</span>' in found
    assert other not in page(await gw.client.get("/ui/sagas?q=nobody"))


async def test_what_a_client_typed_is_shown_as_text(gw: Served) -> None:
    oid = await gw.order(XSS_ORDER, key='"><script>alert(3)</script>')
    await settled(gw, oid)
    for path in (f"/ui/sagas/{oid}", "/ui/sagas", f"/ui/sagas?q={quote(XSS)}", "/ui"):
        text = page(await gw.client.get(path))
        assert "<img src=x" not in text and "<script>alert" not in text, path
    saga = page(await gw.client.get(f"/ui/sagas/{oid}"))
    assert html.escape(XSS, quote=False) in saga.replace("&#34;", '"').replace("&#39;", "'")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in saga
    assert "unknown_product" in saga


async def test_one_saga_shows_its_state_input_timeline_and_links(gw: Served) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = await gw.client.post(
        "/orders",
        json={**ORDER_600, "customer_id": "cust_7"},
        headers={
            "X-Idempotency-Key": "declined-1",
            "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
        },
    )
    oid = resp.json()["id"]
    await settled(gw, oid)
    record = await gw.log.get(oid)
    assert record is not None and record.trace_id == trace
    text = page(await gw.client.get(f"/ui/sagas/{oid}"))
    for expected in ("COMPENSATED", "payment_declined", "cust_7", "600.00", "declined-1",
                     f"saga show {oid}", "charge_payment", "pivot", "undo", "reserve_stock",
                     f'href="http://grafana.test/explore?left={record.trace_id}"',
                     'data-action="cancel"', "Refused (saga_finished)"):  # fmt: skip
        assert expected in text, expected
    assert 'class="attempt way-back' in text  # the compensations: the way back
    assert 'class="attempt pivot o-refused' in text  # the pivot said no


async def test_a_recovery_shows_the_change_of_owner(gw: Served) -> None:
    # A saga its first owner started and then left (as a killed gateway does): this
    # gateway's pump claims it once the lease runs out, at epoch 2, and finishes it.
    now = gw.log.clock.now_ms()  # leases are read on the log's clock
    payload = OrderRequest("cust_r", (Item("prod_1", 1, 500),)).to_payload()
    new = NewSaga("recovered-1", ORDER_SAGA, payload)
    await gw.log.create(new, owner="gateway-killed", lease_expires_ms=now + 200, now_ms=now)
    intent = [Transition("create_order", Phase.INTENT, 1)]
    await gw.log.append("recovered-1", 1, intent, status=SagaStatus.RUNNING, reason=None,
                        now_ms=now + 10)  # fmt: skip
    await settled(gw, "recovered-1")
    text = page(await gw.client.get("/ui/sagas/recovered-1"))
    assert "owner changed" in text and "recovery: claimed by gateway@" in text
    assert "1 recovery" in text and "in doubt" in text  # the lost attempt
    assert re.search(r'<td id="epoch">2</td>', text)


async def test_a_live_fragment_is_the_refreshing_part_only(gw: Served) -> None:
    oid = await gw.order(ORDER_50)
    head = {"X-Fragment": "live"}
    rows = await gw.client.get("/ui/sagas", headers=head)
    assert rows.status_code == 200 and "<html" not in rows.text and f'data-id="{oid}"' in rows.text
    one = await gw.client.get(f"/ui/sagas/{oid}", headers=head)
    assert "<html" not in one.text and 'id="status"' in one.text
    assert "<html" not in (await gw.client.get("/ui", headers=head)).text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/sagas/no-such-saga", 404, "No such saga"),
        ("/ui/sagas/" + "x" * 300, 400, "longer than 256"),
        ("/ui/sagas/a%00b", 400, "control characters"),
        ("/ui/sagas/%3Cimg%20src%3Dx%3E", 404, "No such saga"),
        ("/ui/nope", 404, "No such page"),
        ("/ui/sagas/a/b/c", 404, "No such saga"),
        ("/ui/sagas?status=DONE", 400, "unknown; one of RUNNING"),
        ("/ui/sagas?status=" + "A" * 10_000, 400, "unknown"),
        ("/ui/sagas?definition=trip", 400, "definition"),
        ("/ui/sagas?definition=a&definition=b", 400, "given 2 times"),
        ("/ui/sagas?newer_than=soon", 400, "expected a duration"),
        ("/ui/sagas?older_than=99999999999999999999d", 400, "at most 100 years"),
        ("/ui/sagas?newer_than=5m&older_than=1h", 400, "select nothing"),
        ("/ui/sagas?limit=0", 400, "limit"),
        ("/ui/sagas?limit=99999999999999999999", 400, "limit"),
        ("/ui/sagas?limit=%C2%B2", 400, "limit"),
        ("/ui/sagas?limit=-1", 400, "limit"),
        ("/ui/sagas?cursor=garbage", 400, "invalid cursor"),
        ("/ui/sagas?cursor=s99999999999999999999999", 400, "invalid cursor"),
        ("/ui/sagas?q=" + "q" * 300, 400, "longer than 256"),
        ("/ui/sagas?q=a%0Ab", 400, "control characters"),
        ("/ui/sagas?bogus=1", 400, "unknown parameter"),
        ("/ui/sagas?q=%FF%FE", 200, "No saga matches"),
    ],
)
async def test_bad_input_and_unknown_things_get_the_page_s_own_error(
    gw: Served, path: str, status: int, says: str
) -> None:
    text = page(await gw.client.get(path), status)
    assert says in html.unescape(text), text[-1500:]


async def test_the_token_check_is_the_admin_routes_own(gw: Served) -> None:
    assert (await gw.client.get("/ui/session")).status_code == 401
    wrong = await gw.client.get("/ui/session", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    right = await gw.client.get("/ui/session", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 204


async def test_without_an_admin_token_the_saga_page_is_read_only(tmp_path: Path) -> None:
    async with (
        services(tmp_path) as addresses,
        serve(gateway_settings(tmp_path, addresses, admin_token=None)) as gw,
    ):
        oid = await gw.order(ORDER_50)
        text = page(await gw.client.get(f"/ui/sagas/{oid}"))
        assert 'id="read-only"' in text and "data-action" not in text
        assert "open in Grafana" not in text  # no SAGA_UI_TRACE_URL: no link
        assert (await gw.client.get("/ui/session")).status_code == 403


async def test_docs_are_served_by_the_gateway_itself(gw: Served) -> None:
    text = page(await gw.client.get("/docs"))
    assets = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:
        resp = await gw.client.get(asset)
        assert resp.status_code == 200 and resp.content, asset
        assert resp.headers["content-security-policy"] == CSP
    assert (await gw.client.get("/redoc")).status_code == 404  # it would need a CDN
    assert (await gw.client.get("/openapi.json")).status_code == 200
    # The API itself keeps its JSON answers, without the pages' headers.
    api = await gw.client.get("/orders/nope")
    assert api.status_code == 404 and api.json()["error"] == "order_not_found"
    assert "content-security-policy" not in api.headers
