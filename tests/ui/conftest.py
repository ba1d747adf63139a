"""Fixtures of the explorer's tests: the gateway app served over real HTTP (uvicorn in the
test's loop, so a browser can load it) with the three real services, and Debian's
chromium driven by Playwright. The browser is required, not optional: when it is missing
the browser tests fail with one line saying how to get it (scripts/test installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, Request, async_playwright

from engine.saga_log import SagaLog
from engine.sqlite_log import SqliteSagaLog
from gateway.app import create_app
from gateway.settings import GatewaySettings
from orders.participants import Participants
from tests.gateway.conftest import FAST, TOKEN, gateway_settings, services
from tests.support.procs import free_port

__all__ = ["TOKEN", "Served", "Tab", "browser", "screenshot", "serve"]

CHROMIUM: Final = Path("/usr/bin/chromium")
# As the issue asks: the browser talks to this machine and nothing else.
CHROMIUM_ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS: Final = Path(os.environ.get("TMPDIR") or "/tmp") / "durable-saga-ci" / "screenshots"


@dataclass
class Served:
    """A gateway on a real port: its URL, an HTTP client on it, and its log."""

    url: str
    client: httpx.AsyncClient
    log: SagaLog
    settings: GatewaySettings

    async def order(self, body: dict[str, Any], key: str | None = None) -> str:
        headers = {} if key is None else {"X-Idempotency-Key": key}
        resp = await self.client.post("/orders", json=body, headers=headers)
        assert resp.status_code == 201, resp.text
        order_id: str = resp.json()["id"]
        return order_id


@contextlib.asynccontextmanager
async def serve(
    settings: GatewaySettings, *, log: SagaLog | None = None, **kw: Any
) -> AsyncIterator[Served]:
    """create_app under uvicorn on a free loopback port, in this loop, with its lifespan."""
    saga_log = log or SqliteSagaLog.open(settings.drive.log.db)
    participants = Participants(settings.drive.services)
    kw.setdefault("policy", FAST)
    app = create_app(settings, log=saga_log, participants=participants, **kw)
    port = free_port()
    server = uvicorn.Server(
        # log_config and log_level None: uvicorn leaves the process's logging alone (its own
        # configuration would stop its loggers reaching the root for every later test).
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_config=None, log_level=None
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Served(url, client, saga_log, settings)
    finally:
        server.should_exit = True
        await task
        await participants.close()
        if log is None:
            await saga_log.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with (
        services(tmp_path) as addresses,
        serve(gateway_settings(tmp_path, addresses)) as gw,
    ):
        yield gw


@dataclass
class Tab:
    """A page, with everything it asked the network for and every dialog it opened."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith((self.origin + "/", "data:"))]

    def csp_violations(self) -> list[str]:
        return [c for c in self.console if "Content Security Policy" in c]


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the explorer's browser tests need Debian's chromium "
            "(scripts/test installs it as root; or apt-get install chromium)",
            pytrace=False,
        )
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def tab(b: Browser, origin: str) -> AsyncIterator[Tab]:
    context = await b.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    t = Tab(page, origin)

    def on_request(request: Request) -> None:
        t.requests.append(request.url)

    page.on("request", on_request)
    page.on("console", lambda msg: t.console.append(msg.text))

    async def on_dialog(dialog: Any) -> None:
        t.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield t
    finally:
        await context.close()


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG where CI keeps its artifacts."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
