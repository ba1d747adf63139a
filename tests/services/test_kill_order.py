"""SIGKILL the Order service in the middle of a burst, as test_kill.py does to the other two.

Each order is created, then moved to a terminal status; every fifth order is confirmed and
cancelled at once (the saga's forward step racing an operator's cancel), so exactly one of
the two may win. After the restart, through GetOrder/ListOrders:

- an order whose CreateOrder was answered exists exactly as answered; an unanswered one is
  absent or whole (all its items, its total), never half-written;
- an answered status change is what the ledger holds; of a racing pair, at most one was told
  success, and the status is that one's;
- sending everything again converges (every order exists and is terminal where a change
  was asked for), and every call answered before the kill gets the same answer again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import grpc
import grpc.aio
import pytest

from proto.order.v1 import order_pb2 as pb
from proto.order.v1 import order_pb2_grpc
from tests.services.helpers import epoch
from tests.services.test_kill import (
    EPOCH,
    IN_FLIGHT,
    KILL_AFTER,
    ORDERS,
    Burst,
    assert_cut_off,
    list_all,
    order_id,
)
from tests.support.procs import free_port, start_service

if TYPE_CHECKING:
    OrderStub = order_pb2_grpc.OrderAsyncStub

pytestmark = pytest.mark.slow

CONFIRM: Final[tuple[str, pb.Status.ValueType]] = ("Confirm", pb.CONFIRMED)
CANCEL: Final[tuple[str, pb.Status.ValueType]] = ("Cancel", pb.CANCELLED)


def lines(i: int) -> list[tuple[str, int, int]]:
    """(product, quantity, unit price in cents): one to three lines, each order different."""
    return [(f"p{k}", k + 1, 100 * (i % 7 + 1) + k) for k in range(i % 3 + 1)]


def changes(i: int) -> list[tuple[str, pb.Status.ValueType]]:
    """The status changes asked for order i, sent together once it exists."""
    if i % 5 == 4:
        return [CONFIRM, CANCEL]  # racing: one wins, the other is told no
    if i % 5 == 3:
        return []  # stays PENDING
    return [CONFIRM] if i % 2 else [CANCEL]


async def send_all(stub: OrderStub, kill: Callable[[], object] | None = None) -> Burst:
    """Every order: create, then its changes at once; IN_FLIGHT orders at a time. With
    `kill`, the server is SIGKILLed once KILL_AFTER calls have been answered."""
    result = Burst()
    gate = asyncio.Semaphore(IN_FLIGHT)
    killed = False

    async def call(key: tuple[str, str], send: Awaitable[object]) -> bool:
        nonlocal killed
        try:
            result.answers[key] = await send
        except grpc.aio.AioRpcError as exc:
            result.failures[key] = exc.code()
            return False
        if kill is not None and not killed and len(result.answers) >= KILL_AFTER:
            killed = True
            kill()
        return True

    async def one(i: int) -> None:
        oid = order_id(i)
        create = pb.CreateOrderRequest(
            id=oid,
            customer_id=f"cust-{i % 11}",
            items=[
                pb.OrderItem(product_id=p, quantity=q, unit_price_cents=c) for p, q, c in lines(i)
            ],
        )
        async with gate:
            if not await call(("CreateOrder", oid), stub.CreateOrder(create, metadata=EPOCH)):
                return
            await asyncio.gather(
                *(
                    call(
                        (name, oid),
                        stub.UpdateOrderStatus(
                            pb.UpdateOrderStatusRequest(id=oid, status=status, reason="test"),
                            metadata=EPOCH,
                        ),
                    )
                    for name, status in changes(i)
                )
            )

    await asyncio.gather(*(one(i) for i in range(ORDERS)))
    return result


def same(again: object, first: object) -> bool:
    """A repeated CreateOrder answers with the order as it is now, so its status may have
    moved on since the first answer; everything else must be equal."""
    if isinstance(again, pb.CreateOrderResponse) and isinstance(first, pb.CreateOrderResponse):
        now, then = pb.OrderInfo(), pb.OrderInfo()
        now.CopyFrom(again.order)
        then.CopyFrom(first.order)
        for info in (now, then):
            info.ClearField("status")
            info.ClearField("reason")
        return now == then
    return again == first


async def all_orders(stub: OrderStub) -> dict[str, pb.OrderInfo]:
    async def fetch(token: str) -> tuple[Iterable[pb.OrderInfo], str]:
        page = await stub.ListOrders(pb.ListOrdersRequest(page_size=64, page_token=token))
        return page.orders, page.next_page_token

    return await list_all(fetch, lambda info: info.id)


async def check_orders(stub: OrderStub, round_: Burst, *, complete: bool) -> int:
    """Assert the ledger agrees with the answers; the number of unanswered creates applied.
    `complete`: every call was answered, so every order must exist and have moved."""
    orders = await all_orders(stub)
    assert set(orders) <= {order_id(i) for i in range(ORDERS)}
    applied_unanswered = 0
    for i in range(ORDERS):
        oid = order_id(i)
        info = orders.get(oid)
        created = round_.answers.get(("CreateOrder", oid))
        if info is None:
            assert created is None and not complete, f"{oid}: an answered create was lost"
            continue
        items = [(it.product_id, it.quantity, it.unit_price_cents) for it in info.items]
        assert sorted(items) == sorted(lines(i)), f"{oid}: all the items or none"
        assert info.total_cents == sum(q * c for _, q, c in lines(i)), oid
        assert info.customer_id == f"cust-{i % 11}", oid
        if created is None:
            applied_unanswered += 1
        else:
            assert isinstance(created, pb.CreateOrderResponse)
            assert created.order.id == oid
        asked = changes(i)
        if not asked:
            assert info.status == pb.PENDING, oid
            continue
        told = {
            status: answer.success
            for name, status in asked
            if isinstance(answer := round_.answers.get((name, oid)), pb.UpdateOrderStatusResponse)
        }
        winners = [status for status, success in told.items() if success]
        assert len(winners) <= 1, f"{oid}: both racing changes were told success"
        if winners:
            assert info.status == winners[0], oid
        if told and not winners:  # told no: the other terminal status had won
            assert info.status not in (pb.PENDING, *told), oid
        if complete:
            assert info.status in {status for _, status in asked}, oid
            assert winners, f"{oid}: a change was asked for and none succeeded"
        else:
            assert info.status in {pb.PENDING, *(status for _, status in asked)}, oid
        if info.status == pb.CANCELLED:
            assert info.reason == "test", oid
    return applied_unanswered


async def test_order_service_survives_sigkill_mid_burst(tmp_path: Path) -> None:
    svc = start_service("order", tmp_path, free_port())
    with svc:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            first = await send_all(order_pb2_grpc.OrderStub(channel), kill=svc.kill)
        assert_cut_off(svc, first)
        svc.restart()
        async with grpc.aio.insecure_channel(svc.address) as channel:
            stub: OrderStub = order_pb2_grpc.OrderStub(channel)
            applied = await check_orders(stub, first, complete=False)
            print(f"{len(first.failures)} calls unanswered, {applied} unanswered creates applied")
            again = await send_all(stub)
            assert not again.failures
            for key, answer in first.answers.items():
                assert same(again.answers[key], answer), f"{key}: a repeat gets the first answer"
            await check_orders(stub, again, complete=True)
            # The fencing epochs survived the kill too.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UpdateOrderStatus(
                    pb.UpdateOrderStatusRequest(id=order_id(0), status=pb.CONFIRMED),
                    metadata=epoch(0),
                )
            assert info.value.code() == grpc.StatusCode.ABORTED
