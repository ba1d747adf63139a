"""A saga recovered after a real gateway kill, as the explorer shows it: the gateway
SIGKILLs itself with the payment's intent durable and its call not made, the recovery
daemon claims the saga and finishes it, and the restarted gateway's page for that saga,
in the browser, shows the change of owner, the new epoch and the attempt left in doubt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests.gateway.conftest import ORDER_50
from tests.support.stack import Stack, wait_for, wait_terminal
from tests.ui.conftest import browser, screenshot, tab

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, SAGA_ADMIN_TOKEN="t")
    s.start_services()
    yield s
    s.close()


async def look(url: str, order_id: str) -> None:
    async with browser() as b, tab(b, url) as t:
        page = t.page
        await page.goto(f"{url}/ui/sagas/{order_id}")
        await expect(page.locator("#status")).to_have_text("COMPLETED")
        await expect(page.locator("#epoch")).to_have_text("2")
        recovery = page.locator("tr.event.recovery")
        await expect(recovery).to_have_count(1)
        await expect(recovery).to_contain_text("claimed by recovery@")
        await expect(page.locator("tr.attempt.o-in-doubt")).to_contain_text("charge_payment")
        await expect(page.locator("tr.attempt.pivot.o-done")).to_contain_text("charge_payment")
        await screenshot(page, "saga-recovered-after-kill")
        assert t.foreign_requests() == [] and t.csp_violations() == [] and t.dialogs == []


def test_a_saga_recovered_after_a_gateway_kill_shows_its_new_owner(stack: Stack) -> None:
    gateway = stack.start_gateway(SAGA_CRASH_AT="after_intent:charge_payment", SAGA_LEASE_S="1")
    key = {"X-Idempotency-Key": "killed-mid-saga"}
    # The 201 leaves as soon as the order is durable, the saga then runs: the kill may
    # come before the answer reaches us. Either way the client's retry with its key finds
    # the order.
    with contextlib.suppress(httpx.TransportError), stack.client() as http:
        http.post("/orders", json=ORDER_50, headers=key)
    assert gateway.wait(15) == -9  # killed itself, the payment's intent durable
    stack.recovery()

    def finished() -> bool:  # by the daemon: no gateway runs until it is
        with stack.log() as log:
            record = asyncio.run(log.get_by_key(key["X-Idempotency-Key"]))
        return record is not None and record.status.finished

    wait_for(finished, what="the daemon did not finish the dead gateway's saga")
    stack.start_gateway()
    with stack.client() as http:
        resp = http.post("/orders", json=ORDER_50, headers=key)
        assert resp.status_code == 201 and resp.headers["Idempotent-Replayed"] == "true"
        order_id = resp.json()["id"]
        assert wait_terminal(http, order_id)["status"] == "CONFIRMED"
        text = http.get(f"/ui/sagas/{order_id}").text
        assert "owner changed" in text and "recovery: claimed by recovery@" in text
    asyncio.run(look(stack.url, order_id))
