"""The audit queries over a PostgreSQL ledger while writes go on: ListOrders,
ListPayments and ListReservations page through every record that existed when the listing
began, in order, never twice; every GetStock answer is one consistent snapshot
(initial = available + reserved for every product)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc.aio
import pytest

from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2 as orders
from proto.order.v1 import order_pb2_grpc
from proto.payment.v1 import payment_pb2 as pay
from proto.payment.v1 import payment_pb2_grpc
from tests.services.helpers import epoch, serving, settings_for
from tests.support.pg import fresh_database

BEFORE = 120  # records written before the listing begins
PAGE = 17

Write = Callable[[grpc.aio.Channel, str], Awaitable[object]]
Page = Callable[[grpc.aio.Channel, str], Awaitable[tuple[list[str], str]]]


async def create_order(channel: grpc.aio.Channel, order_id: str) -> object:
    item = orders.OrderItem(product_id="prod_1", quantity=1, unit_price_cents=100)
    request = orders.CreateOrderRequest(id=order_id, customer_id="c", items=[item])
    return await order_pb2_grpc.OrderStub(channel).CreateOrder(request, metadata=epoch(1))


async def orders_page(channel: grpc.aio.Channel, token: str) -> tuple[list[str], str]:
    request = orders.ListOrdersRequest(page_size=PAGE, page_token=token)
    found = await order_pb2_grpc.OrderStub(channel).ListOrders(request)
    return [o.id for o in found.orders], found.next_page_token


async def charge(channel: grpc.aio.Channel, order_id: str) -> object:
    request = pay.ChargeRequest(order_id=order_id, amount_cents=100)
    return await payment_pb2_grpc.PaymentStub(channel).Charge(request, metadata=epoch(1))


async def payments_page(channel: grpc.aio.Channel, token: str) -> tuple[list[str], str]:
    request = pay.ListPaymentsRequest(page_size=PAGE, page_token=token)
    found = await payment_pb2_grpc.PaymentStub(channel).ListPayments(request)
    return [p.order_id for p in found.payments], found.next_page_token


async def reserve(channel: grpc.aio.Channel, order_id: str) -> object:
    item = inv.StockItem(product_id="prod_1", quantity=1)
    request = inv.ReserveRequest(order_id=order_id, items=[item])
    return await inventory_pb2_grpc.InventoryStub(channel).Reserve(request, metadata=epoch(1))


async def reservations_page(channel: grpc.aio.Channel, token: str) -> tuple[list[str], str]:
    request = inv.ListReservationsRequest(page_size=PAGE, page_token=token)
    found = await inventory_pb2_grpc.InventoryStub(channel).ListReservations(request)
    return [r.order_id for r in found.reservations], found.next_page_token


@contextlib.asynccontextmanager
async def on_postgres(
    name: str, tmp_path: Path, **extra: object
) -> AsyncIterator[grpc.aio.Channel]:
    with fresh_database() as url:
        async with serving(settings_for(name, tmp_path, database_url=url, **extra)) as (_, ch):
            yield ch


class Writer:
    """Writes new records (between and after the old ones) until stopped."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.wrote = asyncio.Event()

    async def loop(self, channel: grpc.aio.Channel, write: Write) -> None:
        i = 0
        while True:
            # "k-005x" falls between "k-005" and "k-006": inserts land inside pages too.
            order_id = f"k-{i % BEFORE:03d}x{i}" if i % 2 else f"z-{i:04d}"
            await write(channel, order_id)
            self.written.append(order_id)
            self.wrote.set()
            i += 1

    async def another(self) -> None:
        """Return once at least one more record is written."""
        self.wrote.clear()
        await self.wrote.wait()


@contextlib.asynccontextmanager
async def writing(channel: grpc.aio.Channel, write: Write) -> AsyncIterator[Writer]:
    writer = Writer()
    task = asyncio.create_task(writer.loop(channel, write))
    try:
        yield writer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("service", "write", "page"),
    [
        ("order", create_order, orders_page),
        ("payment", charge, payments_page),
        ("inventory", reserve, reservations_page),
    ],
)
async def test_a_listing_pages_correctly_while_writes_go_on(
    tmp_path: Path, service: str, write: Write, page: Page
) -> None:
    extra = {"seed_stock": (("prod_1", 1_000_000),)} if service == "inventory" else {}
    async with on_postgres(service, tmp_path, **extra) as channel:
        before = [f"k-{i:03d}" for i in range(BEFORE)]
        for order_id in before:
            await write(channel, order_id)
        async with writing(channel, write) as writer:
            listed: list[str] = []
            token = ""
            pages = 0
            while True:
                ids, token = await page(channel, token)
                listed.extend(ids)
                pages += 1
                if not token:
                    break
                await writer.another()  # between every two pages, at least one write
            written = writer.written
        assert listed == sorted(set(listed)), "in order, none twice"
        assert set(before) <= set(listed), "every record that existed at the start"
        assert set(listed) <= set(before) | set(written), "nothing that was never written"
        assert pages >= BEFORE // PAGE


async def test_every_stock_answer_is_one_snapshot_while_reserves_go_on(tmp_path: Path) -> None:
    seed = (("prod_1", 500), ("prod_2", 500))
    async with on_postgres("inventory", tmp_path, seed_stock=seed) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)

        async def churn(i: int) -> None:
            items = [inv.StockItem(product_id=p, quantity=1 + i % 3) for p in ("prod_1", "prod_2")]
            await stub.Reserve(inv.ReserveRequest(order_id=f"s{i}", items=items), metadata=epoch(1))
            if i % 2:
                await stub.Release(inv.ReleaseRequest(order_id=f"s{i}"), metadata=epoch(1))

        async def churning() -> None:
            for i in range(0, 200, 4):
                await asyncio.gather(*(churn(i + j) for j in range(4)))

        task = asyncio.create_task(churning())
        views = 0
        while not task.done():
            view = await stub.GetStock(inv.GetStockRequest())
            assert set(view.initial) == {"prod_1", "prod_2"}, view  # the loop checks both
            for product, initial in view.initial.items():
                assert initial == view.available[product] + view.reserved[product], product
                assert view.available[product] >= 0
            views += 1
        await task
        final = await stub.GetStock(inv.GetStockRequest())
        assert final.reserved["prod_1"] > 0
        assert views > 1
