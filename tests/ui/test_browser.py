"""The explorer in a real browser (Debian's chromium, driven by Playwright): the pages as a
person sees them, with the Content-Security-Policy enforced, the live refresh, the retry
and cancel dialogs, and /docs. Every test checks that the browser asked nothing of any
other origin and that the CSP blocked nothing, and leaves a screenshot of each screen in
${TMPDIR:-/tmp}/durable-saga-ci/screenshots/ (docs/explorer.md shows them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from engine.core import Phase, SagaStatus, Transition
from engine.saga_log import NewSaga
from orders.model import ORDER_SAGA, Item, OrderRequest
from services.common.faults import FaultKind, FaultPlan, FaultRule
from tests.gateway.conftest import (
    FAST,
    ORDER_50,
    ORDER_600,
    TOKEN,
    gateway_settings,
    poll_until,
    services,
    services_but_payment,
    wait_status,
    wait_step,
)
from tests.services.helpers import serving
from tests.ui.conftest import Served, Tab, browser, screenshot, serve, tab

pytestmark = pytest.mark.slow

XSS = "<img src=x onerror=alert(1)>"
SLOW_MS = 3000  # a call slow enough for a person (here, the test) to act while it runs
WAIT_MS = 20_000


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Served]:
    async with (
        services(tmp_path) as addresses,
        serve(gateway_settings(tmp_path, addresses)) as served,
    ):
        yield served


def clean(t: Tab) -> None:
    """Nothing left the machine, nothing was blocked, no dialog opened."""
    assert t.foreign_requests() == [], t.foreign_requests()
    assert t.csp_violations() == [], t.csp_violations()
    assert t.dialogs == [], t.dialogs


async def open_dialog(page: Page, verb: str) -> None:
    await page.click(f'button[data-action="{verb}"]')
    await expect(page.locator("#confirm")).to_be_visible()


async def test_the_overview_and_the_list_follow_new_orders(gw: Served) -> None:
    first = [await gw.order(ORDER_50, key=f"first-{i}") for i in range(3)]
    await gw.order(ORDER_600)
    async with browser() as b, tab(b, gw.url) as t:
        page = t.page
        await page.goto(gw.url + "/")  # the root leads to the explorer
        assert page.url == gw.url + "/ui"
        await expect(page.locator('[data-count="COMPENSATED"]')).to_have_text("1", timeout=WAIT_MS)
        await screenshot(page, "overview")

        # The first page of two, then the next: the operator is on page 2.
        await page.goto(gw.url + "/ui/sagas?limit=2")
        await page.click("a[rel=next]")
        rows = page.locator("tbody#rows tr[data-id]")
        await expect(rows).to_have_count(2)
        on_page_two = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert on_page_two == [first[1], first[0]]
        late = await gw.order(ORDER_50, key="late")
        await asyncio.sleep(3)  # a refresh or more: page 2 keeps its place
        assert await rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == on_page_two

        # The newest page takes the new order in as it arrives, above what it showed.
        await page.goto(gw.url + "/ui/sagas")
        await expect(rows).to_have_count(5)
        newer = await gw.order({**ORDER_50, "customer_id": "cust_new"}, key="newer")
        row = page.locator(f'tr[data-id="{newer}"]')
        await expect(row).to_be_visible(timeout=WAIT_MS)
        ids = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert ids[:2] == [newer, late]
        await expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=WAIT_MS)
        await expect(page.locator("#live-status")).to_contain_text("new since the page opened")
        await screenshot(page, "list")

        # Search by customer, and the filters, as a person uses them.
        await page.fill("header input[name=q]", "cust_new")
        await page.press("header input[name=q]", "Enter")
        await expect(rows).to_have_count(1)
        await expect(page.locator(".match")).to_have_text("customer id")
        await page.goto(gw.url + "/ui/sagas")
        await page.check("input[name=status][value=COMPENSATED]")
        await page.click("form.filters button[type=submit]")
        await expect(rows).to_have_count(1)
        assert "status=COMPENSATED" in page.url
        clean(t)


async def test_a_recovered_saga_shows_its_change_of_owner(gw: Served) -> None:
    # Its first owner wrote an intent and vanished, as a killed gateway does: this
    # gateway claims it when the lease runs out (epoch 2) and drives it to the end.
    now = gw.log.clock.now_ms()  # leases are read on the log's clock
    payload = OrderRequest("cust_recovered", (Item("prod_1", 2, 1250),)).to_payload()
    new = NewSaga("recovered-1", ORDER_SAGA, payload, trace_id="0af7651916cd43dd8448eb211c80319c")
    await gw.log.create(new, owner="gateway@killed", lease_expires_ms=now + 300, now_ms=now)
    intent = [Transition("create_order", Phase.INTENT, 1)]
    await gw.log.append(
        "recovered-1", 1, intent, status=SagaStatus.RUNNING, reason=None, now_ms=now + 20
    )
    async with browser() as b, tab(b, gw.url) as t:
        page = t.page
        await page.goto(gw.url + "/ui/sagas/recovered-1")
        await expect(page.locator("#status")).to_have_text("COMPLETED", timeout=WAIT_MS)
        await expect(page.locator("#epoch")).to_have_text("2")
        recovery = page.locator("tr.event.recovery")
        await expect(recovery).to_have_count(1)
        await expect(recovery).to_contain_text("owner changed")
        await expect(recovery).to_contain_text("claimed by gateway@")
        await expect(page.locator("tr.attempt.o-in-doubt")).to_contain_text("create_order")
        await expect(page.locator("#show-command")).to_have_text("saga show recovered-1")
        await expect(page.locator("#customer")).to_have_text("cust_recovered")
        await expect(page.locator("#total")).to_have_text("25.00")
        await screenshot(page, "saga-recovered")
        clean(t)


async def test_an_operator_retries_a_parked_saga_from_its_page(tmp_path: Path) -> None:
    async with services_but_payment(tmp_path) as (addresses, payment):
        settings = gateway_settings(tmp_path, addresses)
        async with serve(settings, policy=replace(FAST, park_after=2)) as gw:
            oid = await gw.order(ORDER_50)
            await wait_status(gw.log, oid, SagaStatus.NEEDS_ATTENTION)
            async with browser() as b, tab(b, gw.url) as t, serving(payment):
                page = t.page
                await page.goto(gw.url + "/ui")
                attention = page.locator(f'tr[data-id="{oid}"]')
                await expect(attention).to_contain_text("charge_payment")
                await attention.locator("a").click()
                await expect(page.locator("#status")).to_have_text("NEEDS_ATTENTION")
                await screenshot(page, "saga-parked")

                # Without the token: the dialog asks for it, and closing it changes nothing.
                await open_dialog(page, "retry")
                await expect(page.locator("#confirm-text")).to_contain_text("fresh attempt")
                await expect(page.locator("#token-field")).to_be_visible()
                await page.click("#confirm-cancel")
                # A wrong token is refused by the admin check, and nothing is sent.
                await open_dialog(page, "retry")
                await page.fill("#token-input", "not-the-token")
                await page.click("#confirm-go")
                await expect(page.locator("#confirm-error")).to_contain_text("not accepted")
                assert (await gw.log.get(oid)).status is SagaStatus.NEEDS_ATTENTION  # type: ignore[union-attr]

                async def payment_ready() -> bool:
                    return (await gw.client.get("/readyz")).status_code == 200

                await poll_until(payment_ready)  # grpc's reconnect backoff has run out
                await page.fill("#token-input", TOKEN)
                await screenshot(page, "saga-retry-confirm")
                await page.click("#confirm-go")
                await expect(page.locator("#action-result")).to_contain_text("was retried")
                await expect(page.locator("#status")).to_have_text("COMPLETED", timeout=WAIT_MS)
                await expect(page.locator("tr.event.p-resumed")).to_contain_text("resumed by")
                token = await page.evaluate("sessionStorage.getItem('saga-admin-token')")
                assert token == TOKEN  # kept in the tab, asked once
                cookies = await page.context.cookies()
                assert cookies == []  # never a cookie
                assert all(TOKEN not in url for url in t.requests)  # never in a URL
                await screenshot(page, "saga-retried")
                clean(t)


async def test_an_operator_cancels_a_running_saga_and_cannot_past_its_pivot(
    tmp_path: Path,
) -> None:
    slow = FaultPlan(
        (
            FaultRule("Reserve", FaultKind.LATENCY_MS, SLOW_MS),
            FaultRule("UpdateOrderStatus", FaultKind.LATENCY_MS, SLOW_MS),
        )
    )
    patient = replace(FAST, step_timeout_s=10)
    async with (
        services(tmp_path, {"inventory": {"faults": slow}, "order": {"faults": slow}}) as addresses,
        serve(gateway_settings(tmp_path, addresses), policy=patient) as gw,
        browser() as b,
        tab(b, gw.url) as t,
    ):
        page = t.page
        oid = await gw.order(ORDER_50)
        await wait_step(gw.log, oid, "reserve_stock")  # the slow reservation is on its way
        await page.goto(gw.url + f"/ui/sagas/{oid}")
        await open_dialog(page, "cancel")
        await expect(page.locator("#confirm-text")).to_contain_text("turns back before its pivot")
        await expect(page.locator("#confirm-text")).to_contain_text("undo create_order")
        await page.fill("#token-input", TOKEN)
        await screenshot(page, "saga-cancel-confirm")
        await page.click("#confirm-go")
        await expect(page.locator("#action-result")).to_contain_text("was cancelled")
        await expect(page.locator("#status")).to_have_text("COMPENSATED", timeout=WAIT_MS)
        await expect(page.locator("#reason")).to_have_text("cancelled_by_operator")
        await expect(page.locator("tr.attempt.way-back").first).to_be_visible()
        await screenshot(page, "saga-cancelled")

        # Past the pivot (charged, confirming slowly): the page says why not, sends nothing.
        late = await gw.order(ORDER_50)
        await wait_step(gw.log, late, "confirm_order")
        await page.goto(gw.url + f"/ui/sagas/{late}")
        await open_dialog(page, "cancel")
        await expect(page.locator("#confirm-text")).to_contain_text("past_pivot")
        await expect(page.locator("#confirm-go")).to_be_hidden()
        await expect(page.locator("#token-field")).to_be_hidden()  # the token is kept
        await screenshot(page, "saga-cancel-refused")
        await page.keyboard.press("Escape")
        await wait_status(gw.log, late, SagaStatus.COMPLETED)
        clean(t)


async def test_what_a_client_typed_renders_as_text(tmp_path: Path) -> None:
    async with (
        services(tmp_path) as addresses,
        serve(gateway_settings(tmp_path, addresses, admin_token=None)) as gw,
        browser() as b,
        tab(b, gw.url) as t,
    ):
        body = {
            "customer_id": XSS,
            "items": [{"product_id": "<script>alert(2)</script>", "quantity": 1, "price": 5}],
        }
        oid = await gw.order(body, key="<svg onload=alert(3)>")
        page = t.page
        await page.goto(gw.url + f"/ui/sagas/{oid}")
        await expect(page.locator("#customer")).to_have_text(XSS)
        await expect(page.locator("#status")).to_have_text("COMPENSATED", timeout=WAIT_MS)
        await expect(page.locator("#reason")).to_have_text("unknown_product")
        await expect(page.locator("#read-only")).to_be_visible()  # no token: read-only
        assert await page.locator("button[data-action]").count() == 0
        await screenshot(page, "saga-xss")
        for path in ("/ui/sagas", "/ui"):
            await page.goto(gw.url + path)
        await page.fill("header input[name=q]", XSS)
        await page.press("header input[name=q]", "Enter")
        await expect(page.locator(f'tr[data-id="{oid}"]')).to_contain_text(XSS)
        assert await page.locator("img[src=x], svg[onload], script:not([src])").count() == 0
        await asyncio.sleep(0.5)  # an onerror would have fired by now
        clean(t)


async def test_errors_are_the_page_s_own(gw: Served) -> None:
    async with browser() as b, tab(b, gw.url) as t:
        page = t.page
        for path, status, says in (
            ("/ui/sagas/no-such-saga", 404, "No such saga"),
            ("/ui/sagas?older_than=forever", 400, "expected a duration"),
            ("/ui/sagas?limit=100000", 400, "limit"),
            ("/ui/whatever", 404, "No such page"),
        ):
            resp = await page.goto(gw.url + path)
            assert resp is not None and resp.status == status, path
            await expect(page.locator(".error-page")).to_contain_text(says)
        await page.goto(gw.url + "/ui/sagas/no-such-saga")
        await screenshot(page, "not-found")
        assert t.foreign_requests() == [] and t.dialogs == []


async def test_docs_work_offline(gw: Served) -> None:
    async with browser() as b, tab(b, gw.url) as t:
        page = t.page
        await page.goto(gw.url + "/docs")
        operations = page.locator(".opblock-summary-path")
        await expect(operations.first).to_be_visible(timeout=WAIT_MS)
        paths = set(await operations.all_inner_texts())
        assert {"/orders", "/orders/{order_id}", "/sagas/{saga_id}/cancel", "/readyz"} <= {
            p.replace("\u200b", "") for p in paths
        }
        await screenshot(page, "docs")
        clean(t)
