"""The three services through their real grpc.aio server and a real channel: status codes,
validation, fencing, concurrency, storage errors. States are read back through the query
RPCs, never from a mock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from engine.sqlite import DbConfig, open_connection
from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2 as ordr
from proto.payment.v1 import payment_pb2 as pay
from services.common.validate import MAX_ID_LEN, MAX_ITEMS, MAX_QUANTITY
from tests.services.helpers import epoch, saga_error, serving, settings_for

if TYPE_CHECKING:  # the async stubs exist for the type checker only
    from proto.order.v1 import order_pb2_grpc
    from proto.payment.v1 import payment_pb2_grpc

    InventoryStub = inventory_pb2_grpc.InventoryAsyncStub
    PaymentStub = payment_pb2_grpc.PaymentAsyncStub
    OrderStub = order_pb2_grpc.OrderAsyncStub


def items(*lines: tuple[str, int]) -> list[inv.StockItem]:
    return [inv.StockItem(product_id=p, quantity=q) for p, q in lines]


def order_items(*lines: tuple[str, int, int]) -> list[ordr.OrderItem]:
    return [ordr.OrderItem(product_id=p, quantity=q, unit_price_cents=c) for p, q, c in lines]


# --- inventory -------------------------------------------------------------------------


async def test_reserve_release_and_the_audit_view(inventory: InventoryStub) -> None:
    reply = await inventory.Reserve(
        inv.ReserveRequest(order_id="o1", items=items(("prod_1", 2), ("prod_2", 1)))
    )
    assert (reply.success, reply.reason) == (True, "")
    stock = await inventory.GetStock(inv.GetStockRequest())
    assert dict(stock.available) == {"prod_1": 13, "prod_2": 9, "prod_3": 0}
    assert dict(stock.initial) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}
    assert dict(stock.reserved) == {"prod_1": 2, "prod_2": 1, "prod_3": 0}
    found = await inventory.GetReservation(inv.GetReservationRequest(order_id="o1"))
    assert found.state == inv.RESERVATION_STATE_RESERVED
    assert {(i.product_id, i.quantity) for i in found.items} == {("prod_1", 2), ("prod_2", 1)}
    assert (await inventory.Release(inv.ReleaseRequest(order_id="o1"))).success
    found = await inventory.GetReservation(inv.GetReservationRequest(order_id="o1"))
    assert found.state == inv.RESERVATION_STATE_RELEASED
    stock = await inventory.GetStock(inv.GetStockRequest(product_ids=["prod_1"]))
    assert dict(stock.available) == {"prod_1": 15}
    none = await inventory.GetReservation(inv.GetReservationRequest(order_id="never"))
    assert none.state == inv.RESERVATION_STATE_NONE


async def test_rejections_carry_their_reason(inventory: InventoryStub) -> None:
    short = await inventory.Reserve(inv.ReserveRequest(order_id="a", items=items(("prod_3", 1))))
    unknown = await inventory.Reserve(inv.ReserveRequest(order_id="b", items=items(("x", 1))))
    await inventory.Release(inv.ReleaseRequest(order_id="c"))
    late = await inventory.Reserve(inv.ReserveRequest(order_id="c", items=items(("prod_1", 1))))
    assert [(r.success, r.reason) for r in (short, unknown, late)] == [
        (False, "out_of_stock"),
        (False, "unknown_product"),
        (False, "already_released"),
    ]
    rejected = await inventory.GetReservation(inv.GetReservationRequest(order_id="a"))
    assert (rejected.state, rejected.reason) == (inv.RESERVATION_STATE_REJECTED, "out_of_stock")


async def test_concurrent_reservations_cannot_oversell(inventory: InventoryStub) -> None:
    # prod_2 has 10 units; 50 orders of 1 unit arrive at once.
    replies = await asyncio.gather(
        *(
            inventory.Reserve(inv.ReserveRequest(order_id=f"o{i}", items=items(("prod_2", 1))))
            for i in range(50)
        )
    )
    granted = [i for i, reply in enumerate(replies) if reply.success]
    assert len(granted) == 10
    assert {r.reason for r in replies if not r.success} == {"out_of_stock"}
    stock = await inventory.GetStock(inv.GetStockRequest(product_ids=["prod_2"]))
    assert (stock.available["prod_2"], stock.reserved["prod_2"]) == (0, 10)
    listed = await inventory.ListReservations(inv.ListReservationsRequest(page_size=1000))
    reserved = {
        r.order_id for r in listed.reservations if r.state == inv.RESERVATION_STATE_RESERVED
    }
    assert reserved == {f"o{i}" for i in granted}, "the granted ones, and only they, hold stock"


async def test_fencing_and_conflicting_repeats(inventory: InventoryStub) -> None:
    request = inv.ReserveRequest(order_id="o1", items=items(("prod_1", 1)))
    assert (await inventory.Reserve(request, metadata=epoch(5))).success
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.Reserve(request, metadata=epoch(4))
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert "stale" in (info.value.details() or "")
    assert saga_error(info.value) == "stale_epoch"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.Release(inv.ReleaseRequest(order_id="o1"))  # no epoch: 0 < 5
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert (await inventory.Reserve(request, metadata=epoch(5))).success
    other = inv.ReserveRequest(order_id="o1", items=items(("prod_1", 2)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.Reserve(other, metadata=epoch(6))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "prod_1x1" in (info.value.details() or "")
    found = await inventory.GetReservation(inv.GetReservationRequest(order_id="o1"))
    assert [(i.product_id, i.quantity) for i in found.items] == [("prod_1", 1)]
    assert found.state == inv.RESERVATION_STATE_RESERVED


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", " 3", "99999999999999999999"])
async def test_a_malformed_epoch_is_invalid(inventory: InventoryStub, bad: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.Release(inv.ReleaseRequest(order_id="o1"), metadata=epoch(bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-saga-epoch" in (info.value.details() or "")
    found = await inventory.GetReservation(inv.GetReservationRequest(order_id="o1"))
    assert found.state == inv.RESERVATION_STATE_NONE


LONG = "x" * (MAX_ID_LEN + 1)
BAD_RESERVES = {
    "empty order id": inv.ReserveRequest(order_id="", items=items(("prod_1", 1))),
    "long order id": inv.ReserveRequest(order_id=LONG, items=items(("prod_1", 1))),
    "no items": inv.ReserveRequest(order_id="o1"),
    "zero quantity": inv.ReserveRequest(order_id="o1", items=items(("prod_1", 0))),
    "negative quantity": inv.ReserveRequest(order_id="o1", items=items(("prod_1", -3))),
    "absurd quantity": inv.ReserveRequest(order_id="o1", items=items(("prod_1", MAX_QUANTITY + 1))),
    "empty product": inv.ReserveRequest(order_id="o1", items=items(("", 1))),
    "long product": inv.ReserveRequest(order_id="o1", items=items((LONG, 1))),
    "duplicate product": inv.ReserveRequest(
        order_id="o1", items=items(("prod_1", 1), ("prod_1", 2))
    ),
    "too many items": inv.ReserveRequest(
        order_id="o1", items=items(*((f"p{i}", 1) for i in range(MAX_ITEMS + 1)))
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RESERVES))
async def test_bad_reserves_are_invalid_arguments(inventory: InventoryStub, case: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.Reserve(BAD_RESERVES[case])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    listed = await inventory.ListReservations(inv.ListReservationsRequest())
    assert list(listed.reservations) == []


@pytest.mark.parametrize("token", ["garbage", "v1.", "v1.@@@"])
async def test_a_bad_page_token_is_invalid(inventory: InventoryStub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.ListReservations(inv.ListReservationsRequest(page_token=token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_reservations_pages(inventory: InventoryStub) -> None:
    for i in range(5):
        await inventory.Release(inv.ReleaseRequest(order_id=f"o{i}"))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await inventory.ListReservations(
            inv.ListReservationsRequest(page_size=2, page_token=token)
        )
        pages += 1
        seen.extend(r.order_id for r in page.reservations)
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == ([f"o{i}" for i in range(5)], 3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await inventory.ListReservations(inv.ListReservationsRequest(page_size=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    clamped = await inventory.ListReservations(inv.ListReservationsRequest(page_size=10**6))
    assert len(clamped.reservations) == 5


async def test_a_locked_ledger_is_unavailable_not_internal(tmp_path: Path) -> None:
    settings = settings_for("inventory", tmp_path, busy_timeout_ms=50)
    async with serving(settings) as (_, channel):
        stub: InventoryStub = inventory_pb2_grpc.InventoryStub(channel)
        holder = open_connection(DbConfig(settings.ledger_path))
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Reserve(inv.ReserveRequest(order_id="o1", items=items(("prod_1", 1))))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "locked" in (info.value.details() or "")
        assert (await stub.GetReservation(inv.GetReservationRequest(order_id="o1"))).state == (
            inv.RESERVATION_STATE_NONE
        )
        # The caller retries, and it goes through once the lock is gone.
        reply = await stub.Reserve(inv.ReserveRequest(order_id="o1", items=items(("prod_1", 1))))
        assert reply.success


# --- payment ---------------------------------------------------------------------------


async def test_charge_decline_and_refund(payment: PaymentStub) -> None:
    ok = await payment.Charge(pay.ChargeRequest(order_id="a", amount_cents=50_000))
    big = await payment.Charge(pay.ChargeRequest(order_id="b", amount_cents=50_001))
    assert (ok.success, big.success, big.reason) == (True, False, "payment_declined")
    a = await payment.GetPayment(pay.GetPaymentRequest(order_id="a"))
    b = await payment.GetPayment(pay.GetPaymentRequest(order_id="b"))
    assert (a.state, a.amount_cents) == (pay.PAYMENT_STATE_CHARGED, 50_000)
    assert (b.state, b.reason) == (pay.PAYMENT_STATE_DECLINED, "payment_declined")
    assert (await payment.Refund(pay.RefundRequest(order_id="a"))).success
    assert (await payment.Refund(pay.RefundRequest(order_id="c"))).success  # tombstone
    late = await payment.Charge(pay.ChargeRequest(order_id="c", amount_cents=100))
    assert (late.success, late.reason) == (False, "already_refunded")
    listed = await payment.ListPayments(pay.ListPaymentsRequest())
    assert [(p.order_id, p.state, p.amount_cents) for p in listed.payments] == [
        ("a", pay.PAYMENT_STATE_REFUNDED, 50_000),
        ("b", pay.PAYMENT_STATE_DECLINED, 50_001),
        ("c", pay.PAYMENT_STATE_REFUNDED, 0),
    ]
    none = await payment.GetPayment(pay.GetPaymentRequest(order_id="zzz"))
    assert (none.state, none.amount_cents) == (pay.PAYMENT_STATE_NONE, 0)


async def test_a_charge_repeated_with_another_amount_fails_its_precondition(
    payment: PaymentStub,
) -> None:
    await payment.Charge(pay.ChargeRequest(order_id="a", amount_cents=100))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await payment.Charge(pay.ChargeRequest(order_id="a", amount_cents=101))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = await payment.GetPayment(pay.GetPaymentRequest(order_id="a"))
    assert found.amount_cents == 100


@pytest.mark.parametrize(
    "request_",
    [
        pay.ChargeRequest(order_id="a", amount_cents=0),
        pay.ChargeRequest(order_id="a", amount_cents=-5),
        pay.ChargeRequest(order_id="", amount_cents=5),
        pay.ChargeRequest(order_id=LONG, amount_cents=5),
        pay.ChargeRequest(order_id="a", amount_cents=5, customer_id=LONG),
    ],
)
async def test_bad_charges_are_invalid_arguments(
    payment: PaymentStub, request_: pay.ChargeRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await payment.Charge(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list((await payment.ListPayments(pay.ListPaymentsRequest())).payments) == []


async def test_payment_fencing(payment: PaymentStub) -> None:
    await payment.Charge(pay.ChargeRequest(order_id="a", amount_cents=100), metadata=epoch(2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await payment.Refund(pay.RefundRequest(order_id="a"), metadata=epoch(1))
    assert info.value.code() == grpc.StatusCode.ABORTED
    found = await payment.GetPayment(pay.GetPaymentRequest(order_id="a"))
    assert found.state == pay.PAYMENT_STATE_CHARGED


# --- order -----------------------------------------------------------------------------


async def test_order_lifecycle(order: OrderStub) -> None:
    lines = order_items(("prod_1", 2, 5000), ("prod_2", 1, 1999))
    made = await order.CreateOrder(ordr.CreateOrderRequest(id="o1", customer_id="c", items=lines))
    assert (made.order.status, made.order.total_cents) == (ordr.PENDING, 11_999)
    again = await order.CreateOrder(ordr.CreateOrderRequest(id="o1", customer_id="c", items=lines))
    assert again.order == made.order
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.CreateOrder(ordr.CreateOrderRequest(id="o1", customer_id="d", items=lines))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cancel = ordr.UpdateOrderStatusRequest(id="o1", status=ordr.CANCELLED, reason="out_of_stock")
    assert (await order.UpdateOrderStatus(cancel)).success
    assert (await order.UpdateOrderStatus(cancel)).success
    confirm = ordr.UpdateOrderStatusRequest(id="o1", status=ordr.CONFIRMED)
    assert not (await order.UpdateOrderStatus(confirm)).success
    got = await order.GetOrder(ordr.GetOrderRequest(id="o1"))
    assert (got.order.status, got.order.reason) == (ordr.CANCELLED, "out_of_stock")
    assert [(i.product_id, i.quantity, i.unit_price_cents) for i in got.order.items] == [
        ("prod_1", 2, 5000),
        ("prod_2", 1, 1999),
    ]
    listed = await order.ListOrders(ordr.ListOrdersRequest())
    assert list(listed.orders) == [got.order]
    assert listed.next_page_token == ""


async def test_order_not_found_and_bad_status(order: OrderStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.GetOrder(ordr.GetOrderRequest(id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.UpdateOrderStatus(
            ordr.UpdateOrderStatusRequest(id="nope", status=ordr.CONFIRMED)
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.UpdateOrderStatus(ordr.UpdateOrderStatusRequest(id="o", status=ordr.PENDING))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PENDING" in (info.value.details() or "")


async def test_order_fencing(order: OrderStub) -> None:
    lines = order_items(("prod_1", 1, 100))
    create = ordr.CreateOrderRequest(id="o1", customer_id="c", items=lines)
    await order.CreateOrder(create, metadata=epoch(3))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.UpdateOrderStatus(
            ordr.UpdateOrderStatusRequest(id="o1", status=ordr.CONFIRMED), metadata=epoch(2)
        )
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert (await order.GetOrder(ordr.GetOrderRequest(id="o1"))).order.status == ordr.PENDING


BAD_ORDERS = {
    "empty id": ordr.CreateOrderRequest(id="", customer_id="c", items=order_items(("p", 1, 1))),
    "long id": ordr.CreateOrderRequest(id=LONG, customer_id="c", items=order_items(("p", 1, 1))),
    "no customer": ordr.CreateOrderRequest(id="o", items=order_items(("p", 1, 1))),
    "no items": ordr.CreateOrderRequest(id="o", customer_id="c"),
    "zero quantity": ordr.CreateOrderRequest(
        id="o", customer_id="c", items=order_items(("p", 0, 1))
    ),
    "zero price": ordr.CreateOrderRequest(id="o", customer_id="c", items=order_items(("p", 1, 0))),
    "negative price": ordr.CreateOrderRequest(
        id="o", customer_id="c", items=order_items(("p", 1, -100))
    ),
    "duplicate product": ordr.CreateOrderRequest(
        id="o", customer_id="c", items=order_items(("p", 1, 1), ("p", 2, 1))
    ),
    "total overflows": ordr.CreateOrderRequest(
        id="o", customer_id="c", items=order_items(("p", MAX_QUANTITY, 2**62))
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ORDERS))
async def test_bad_orders_are_invalid_arguments(order: OrderStub, case: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await order.CreateOrder(BAD_ORDERS[case])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert list((await order.ListOrders(ordr.ListOrdersRequest())).orders) == []


async def test_a_bug_is_internal_with_a_short_message_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    settings = settings_for("inventory", tmp_path)
    async with serving(settings) as (_, channel):
        stub: InventoryStub = inventory_pb2_grpc.InventoryStub(channel)
        vandal = open_connection(DbConfig(settings.ledger_path))
        vandal.execute("DROP TABLE reservation_items")  # a schema this program never made
        vandal.close()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetStock(inv.GetStockRequest())
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "Traceback" not in (info.value.details() or "")
        assert saga_error(info.value) == "internal"
        found = await stub.GetReservation(inv.GetReservationRequest(order_id="o1"))
        assert found.state == inv.RESERVATION_STATE_NONE


async def test_pages_of_huge_orders_fit_in_a_grpc_message(order: OrderStub) -> None:
    # 40 orders of 1000 long-named items: ~5.5 MB in one page would pass grpc's 4 MiB limit.
    lines = order_items(*((f"{i:04d}".ljust(MAX_ID_LEN, "p"), 1, 1) for i in range(MAX_ITEMS)))
    await asyncio.gather(
        *(
            order.CreateOrder(ordr.CreateOrderRequest(id=f"o{n:02d}", customer_id="c", items=lines))
            for n in range(40)
        )
    )
    seen: list[str] = []
    token = ""
    while True:
        page = await order.ListOrders(ordr.ListOrdersRequest(page_size=1000, page_token=token))
        assert all(len(o.items) == MAX_ITEMS for o in page.orders)
        seen.extend(o.id for o in page.orders)
        if not (token := page.next_page_token):
            break
    assert seen == [f"o{n:02d}" for n in range(40)]
