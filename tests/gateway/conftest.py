"""Fixtures of the gateway's in-process tests: the app with its lifespan running, an httpx
client on it (ASGI, no sockets), and the three real participant services (their grpc.aio
servers and ledgers, the same bootstrap as `saga service`) in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from engine.core import SagaStatus
from engine.log_settings import SagaLogSettings
from engine.saga_log import SagaLog
from engine.sqlite import DbConfig, Synchronous
from engine.sqlite_log import SqliteSagaLog
from gateway.app import create_app
from gateway.settings import GatewaySettings
from orders.participants import Participants, ServiceAddresses
from orders.runtime import DriveSettings
from orders.saga import OrderSagaPolicy
from services.settings import ServiceSettings
from tests.services.helpers import serving, settings_for
from tests.support.procs import free_port

# Quick retries, so that a test about failures does not wait a minute of backoff.
FAST = OrderSagaPolicy(
    max_attempts=3, park_after=4, initial_backoff_s=0.01, max_backoff_s=0.05, step_timeout_s=2
)
TOKEN = "s3cret-admin-token"
# The seed README's two examples.
ORDER_50 = {
    "customer_id": "cust_123",
    "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.00}],
}
ORDER_600 = {
    "customer_id": "cust_123",
    "items": [{"product_id": "prod_1", "quantity": 1, "price": 600.00}],
}
TERMINAL = ("CONFIRMED", "CANCELLED")


@dataclass
class Api:
    """A running app, its client, its log and the participants it calls."""

    app: FastAPI
    client: httpx.AsyncClient
    log: SagaLog
    participants: Participants
    settings: GatewaySettings

    async def post_order(
        self, body: Any = None, key: str | None = None, **headers: str
    ) -> httpx.Response:
        hdrs = dict(headers)
        if key is not None:
            hdrs["X-Idempotency-Key"] = key
        return await self.client.post("/orders", json=ORDER_50 if body is None else body,
                                      headers=hdrs)  # fmt: skip

    async def wait_terminal(self, order_id: str, within_s: float = 20.0) -> dict[str, Any]:
        """Poll GET /orders/{id} until CONFIRMED or CANCELLED (bounded)."""
        async with asyncio.timeout(within_s):
            while True:
                resp = await self.client.get(f"/orders/{order_id}")
                assert resp.status_code == 200, resp.text
                order: dict[str, Any] = resp.json()
                if order["status"] in TERMINAL:
                    record = await self.log.get(order_id)
                    assert record is not None and record.status.finished
                    return order
                await asyncio.sleep(0.02)


async def poll_until(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    """Wait until `check()` is true, bounded. Polling is the point: the state is in the log
    or another process, not in an event this test could wait on."""
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_status(log: SagaLog, saga_id: str, *statuses: SagaStatus) -> None:
    """Until the saga is in one of `statuses`."""

    async def reached() -> bool:
        record = await log.get(saga_id)
        return record is not None and record.status in statuses

    await poll_until(reached)


async def wait_step(log: SagaLog, saga_id: str, step: str) -> None:
    """Until the saga's log has a transition of `step`."""

    async def started() -> bool:
        return any(t.step == step for t in await log.transitions(saga_id))

    await poll_until(started, 10)


@contextlib.asynccontextmanager
async def services_but_payment(
    tmp_path: Path,
) -> AsyncIterator[tuple[ServiceAddresses, ServiceSettings]]:
    """Order and Inventory serving, Payment down at its address; and the settings that
    start Payment there later (`serving(payment)`)."""
    payment_port = free_port()
    async with (
        serving(settings_for("order", tmp_path)) as (order, _),
        serving(settings_for("inventory", tmp_path)) as (inventory, _),
    ):
        addresses = ServiceAddresses(
            ("127.0.0.1", order.port), ("127.0.0.1", payment_port), ("127.0.0.1", inventory.port)
        )
        yield addresses, settings_for("payment", tmp_path, addr=("127.0.0.1", payment_port))


@contextlib.asynccontextmanager
async def services(
    tmp_path: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> AsyncIterator[ServiceAddresses]:
    """The three real services in this process, ledgers in tmp_path; `overrides` changes
    one service's settings by name (e.g. its faults or its address)."""
    more = overrides or {}
    async with (
        serving(settings_for("order", tmp_path, **more.get("order", {}))) as (order, _),
        serving(settings_for("payment", tmp_path, **more.get("payment", {}))) as (payment, _),
        serving(settings_for("inventory", tmp_path, **more.get("inventory", {}))) as (inv, _),
    ):
        yield ServiceAddresses(
            order=("127.0.0.1", order.port),
            payment=("127.0.0.1", payment.port),
            inventory=("127.0.0.1", inv.port),
        )


@contextlib.asynccontextmanager
async def running(
    settings: GatewaySettings, *, log: SagaLog | None = None, **kw: Any
) -> AsyncIterator[Api]:
    """create_app with its lifespan entered, as `saga gateway` does, and a client on it."""
    saga_log = log or SqliteSagaLog.open(settings.drive.log.db)
    participants = kw.pop("participants", None) or Participants(settings.drive.services)
    app = create_app(settings, log=saga_log, participants=participants, **kw)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield Api(app, client, saga_log, participants, settings)
    finally:
        await participants.close()
        if log is None:
            await saga_log.close()


def gateway_settings(tmp_path: Path, addresses: ServiceAddresses, **kw: Any) -> GatewaySettings:
    base = GatewaySettings(
        drive=DriveSettings(
            log=SagaLogSettings(DbConfig(tmp_path / "saga.db", Synchronous.NORMAL)),
            services=addresses,
            drain_s=2.0,
            lease_s=5.0,
        ),
        admin_token=TOKEN,
        ready_timeout_s=5.0,  # a loaded test machine is no reason for /readyz to say 503
    )
    return replace(base, **kw)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServiceAddresses]:
    async with services(tmp_path) as addresses:
        yield addresses


@pytest.fixture
async def api(tmp_path: Path, stack: ServiceAddresses) -> AsyncIterator[Api]:
    async with running(gateway_settings(tmp_path, stack), policy=FAST) as app:
        yield app
