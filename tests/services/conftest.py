from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2_grpc
from proto.payment.v1 import payment_pb2_grpc
from services.settings import ServiceSettings
from tests.services.helpers import serving, settings_for
from tests.support.pg import fresh_database
from tests.support.procs import kill_all


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_all()


@pytest.fixture
async def inventory(tmp_path: Path) -> AsyncIterator[inventory_pb2_grpc.InventoryAsyncStub]:
    async with serving(settings_for("inventory", tmp_path)) as (_, channel):
        yield inventory_pb2_grpc.InventoryStub(channel)


@pytest.fixture
async def payment(tmp_path: Path) -> AsyncIterator[payment_pb2_grpc.PaymentAsyncStub]:
    async with serving(settings_for("payment", tmp_path)) as (_, channel):
        yield payment_pb2_grpc.PaymentStub(channel)


@pytest.fixture
async def order(tmp_path: Path) -> AsyncIterator[order_pb2_grpc.OrderAsyncStub]:
    async with serving(settings_for("order", tmp_path)) as (_, channel):
        yield order_pb2_grpc.OrderStub(channel)


LedgerSettings = Callable[[str], ServiceSettings]


@pytest.fixture(params=["sqlite", "postgres"])
async def ledger_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[LedgerSettings]:
    """A service's settings with its ledger in SQLite, then in a fresh PostgreSQL
    database: every ledger test runs against both adapters of its port."""
    if request.param == "sqlite":
        yield lambda name: settings_for(name, tmp_path)
        return
    with fresh_database() as url:
        yield lambda name: settings_for(name, tmp_path, database_url=url)
