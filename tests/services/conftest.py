from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2_grpc
from proto.payment.v1 import payment_pb2_grpc
from tests.services.helpers import serving, settings_for
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
