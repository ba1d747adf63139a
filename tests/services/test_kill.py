"""SIGKILL a service in the middle of a burst of calls, start it again on the same ledger
(or, on PostgreSQL, carry on with another replica of it that shares the ledger), and check
through the query RPCs that nothing acknowledged was lost or applied twice:

- every call that got an answer is reflected exactly once, and its ledger state matches it;
- a call that got no answer is applied entirely or not at all;
- stock balances (initial = available + reserved, nothing negative), each payment is its
  order's amount;
- sending every call again converges, and the calls that had an answer get the same one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import grpc
import grpc.aio
import pytest

from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from proto.payment.v1 import payment_pb2 as pay
from proto.payment.v1 import payment_pb2_grpc
from tests.services.helpers import epoch
from tests.support.procs import ServiceProcess, free_port, start_service

if TYPE_CHECKING:
    InventoryStub = inventory_pb2_grpc.InventoryAsyncStub
    PaymentStub = payment_pb2_grpc.PaymentAsyncStub

pytestmark = pytest.mark.slow

ORDERS: Final = 400
IN_FLIGHT: Final = 48
KILL_AFTER: Final = 150  # answers before the SIGKILL: the burst is still going on
EPOCH: Final = epoch(1)

Key = tuple[str, str]  # (operation, order id)
R = TypeVar("R")


@dataclass
class Burst:
    """The answers of one round of calls: a message, or the status of a failed call."""

    answers: dict[Key, object] = field(default_factory=dict)
    failures: dict[Key, grpc.StatusCode] = field(default_factory=dict)


async def burst(
    calls: list[tuple[Key, Callable[[], Awaitable[object]]]],
    kill: Callable[[], object] | None = None,
) -> Burst:
    """Send every call, IN_FLIGHT at a time; after KILL_AFTER answers, `kill` the server."""
    result = Burst()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(key: Key, send: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            try:
                result.answers[key] = await send()
            except grpc.aio.AioRpcError as exc:
                result.failures[key] = exc.code()
                return
        if kill is not None and len(result.answers) == KILL_AFTER:
            kill()

    await asyncio.gather(*(one(key, send) for key, send in calls))
    return result


def order_id(i: int) -> str:
    return f"order-{i:04d}"


def assert_cut_off(svc: ServiceProcess, first: Burst) -> None:
    """The SIGKILL landed mid-burst, and the calls it cut off failed as a dead server's do."""
    assert not svc.running
    assert first.failures, "the kill came in the middle of the burst"
    assert set(first.failures.values()) <= {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


async def list_all(
    fetch: Callable[[str], Awaitable[tuple[Iterable[R], str]]], key: Callable[[R], str]
) -> dict[str, R]:
    """Every record of a paged List* RPC by its order id; `fetch(token)` gives a page's
    records and the next token. No record may be listed twice."""
    found: dict[str, R] = {}
    token = ""
    while True:
        records, token = await fetch(token)
        for record in records:
            assert key(record) not in found, f"{key(record)} listed twice"
            found[key(record)] = record
        if not token:
            return found


# --- inventory -------------------------------------------------------------------------

SEED: Final = {"p1": 120, "p2": 80, "p3": 0, "p4": 100_000}


def stock_lines(i: int) -> list[tuple[str, int]]:
    if i % 10 == 0:
        return [("p3", 1)]  # out of stock
    if i % 10 == 1:
        return [("nope", 1), ("p1", 1)]  # unknown product (sorted, as the ledger lists them)
    lines = [("p1", 1), ("p4", i % 3 + 1)]
    if i % 2 == 0:
        lines.append(("p2", 1))
    return sorted(lines)  # p1 runs out part way: later orders are out_of_stock


def inventory_calls(stub: InventoryStub) -> list[tuple[Key, Callable[[], Awaitable[object]]]]:
    calls: list[tuple[Key, Callable[[], Awaitable[object]]]] = []
    for i in range(ORDERS):
        reserve = inv.ReserveRequest(
            order_id=order_id(i),
            items=[inv.StockItem(product_id=p, quantity=q) for p, q in stock_lines(i)],
        )
        calls.append((("Reserve", order_id(i)), partial(stub.Reserve, reserve, metadata=EPOCH)))
        if i % 4 == 3:  # a compensation racing its action
            release = inv.ReleaseRequest(order_id=order_id(i))
            calls.append((("Release", order_id(i)), partial(stub.Release, release, metadata=EPOCH)))
    random.Random(20).shuffle(calls)
    return calls


async def all_reservations(stub: InventoryStub) -> dict[str, inv.Reservation]:
    async def fetch(token: str) -> tuple[Iterable[inv.Reservation], str]:
        page = await stub.ListReservations(
            inv.ListReservationsRequest(page_size=64, page_token=token)
        )
        return page.reservations, page.next_page_token

    return await list_all(fetch, lambda record: record.order_id)


async def check_inventory(stub: InventoryStub, issued: set[Key], round_: Burst) -> int:
    """Assert the ledger agrees with the answers; the number of unanswered calls applied."""
    reservations = await all_reservations(stub)
    assert set(reservations) <= {oid for _, oid in issued}
    applied_unanswered = 0
    held = dict.fromkeys(SEED, 0)
    for i in range(ORDERS):
        oid = order_id(i)
        record = reservations.get(oid)
        state = record.state if record else inv.RESERVATION_STATE_NONE
        items = sorted((item.product_id, item.quantity) for item in record.items) if record else []
        tombstone = state == inv.RESERVATION_STATE_RELEASED and not items
        released = ("Release", oid) in issued
        if state == inv.RESERVATION_STATE_RESERVED:
            for product, quantity in items:
                held[product] += quantity
        if not released:
            assert state != inv.RESERVATION_STATE_RELEASED, oid
        release_answer = round_.answers.get(("Release", oid))
        if release_answer is not None:
            assert isinstance(release_answer, inv.ReleaseResponse)
            assert release_answer.success
            assert state in (inv.RESERVATION_STATE_RELEASED, inv.RESERVATION_STATE_REJECTED), oid
        answer = round_.answers.get(("Reserve", oid))
        if answer is None:  # no answer: all or nothing
            if state != inv.RESERVATION_STATE_NONE and not tombstone:
                assert items == stock_lines(i), oid
                applied_unanswered += 1
            continue
        assert isinstance(answer, inv.ReserveResponse)
        if answer.success:
            assert state == inv.RESERVATION_STATE_RESERVED or (
                released and state == inv.RESERVATION_STATE_RELEASED
            ), oid
            assert items == stock_lines(i), oid
        elif answer.reason == "already_released":
            assert tombstone, oid
        else:
            assert answer.reason in ("out_of_stock", "unknown_product"), answer.reason
            assert record is not None
            assert (state, record.reason, items) == (
                inv.RESERVATION_STATE_REJECTED,
                answer.reason,
                stock_lines(i),
            ), oid
            if answer.reason == "unknown_product":
                assert i % 10 == 1
    stock = await stub.GetStock(inv.GetStockRequest())
    assert dict(stock.initial) == SEED
    for product, initial in SEED.items():
        assert stock.available[product] >= 0
        assert initial == stock.available[product] + stock.reserved[product], product
        assert stock.reserved[product] == held[product], product
    return applied_unanswered


async def test_inventory_survives_sigkill_mid_burst(tmp_path: Path) -> None:
    seed = ",".join(f"{product}={quantity}" for product, quantity in SEED.items())
    svc = start_service("inventory", tmp_path, free_port(), {"INVENTORY_SEED_STOCK": seed})
    with svc:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            calls = inventory_calls(inventory_pb2_grpc.InventoryStub(channel))
            first = await burst(calls, kill=svc.kill)
        assert_cut_off(svc, first)
        issued = {key for key, _ in calls}
        svc.restart()
        await converge_inventory(svc, issued, first)


async def test_an_inventory_replica_killed_mid_burst_leaves_the_other_consistent(
    pg_url: str, tmp_path: Path
) -> None:
    seed = ",".join(f"{product}={quantity}" for product, quantity in SEED.items())
    env = {"INVENTORY_SEED_STOCK": seed, "INVENTORY_DATABASE_URL": pg_url}
    doomed = start_service("inventory", tmp_path / "a", free_port(), env)
    survivor = start_service("inventory", tmp_path / "b", free_port(), env)
    with doomed, survivor:
        async with grpc.aio.insecure_channel(doomed.address) as channel:
            calls = inventory_calls(inventory_pb2_grpc.InventoryStub(channel))
            first = await burst(calls, kill=doomed.kill)
        assert_cut_off(doomed, first)
        # Not restarted: the other replica answers for the shared ledger from now on.
        await converge_inventory(survivor, {key for key, _ in calls}, first)


async def converge_inventory(svc: ServiceProcess, issued: set[Key], first: Burst) -> None:
    async with grpc.aio.insecure_channel(svc.address) as channel:
        stub: InventoryStub = inventory_pb2_grpc.InventoryStub(channel)
        applied = await check_inventory(stub, issued, first)
        print(f"{len(first.failures)} calls unanswered, {applied} of those reserves applied")
        again = await burst(inventory_calls(stub))
        assert not again.failures
        for key, answer in first.answers.items():
            assert again.answers[key] == answer, f"{key}: a repeat gets the first answer"
        await check_inventory(stub, issued, again)
        # The fencing epochs survived the kill too.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Release(inv.ReleaseRequest(order_id=order_id(0)), metadata=epoch(0))
        assert info.value.code() == grpc.StatusCode.ABORTED


# --- payment ---------------------------------------------------------------------------


def amount(i: int) -> int:
    return 60_000 if i % 9 == 0 else 1_000 + i  # every ninth is declined


def payment_calls(stub: PaymentStub) -> list[tuple[Key, Callable[[], Awaitable[object]]]]:
    calls: list[tuple[Key, Callable[[], Awaitable[object]]]] = []
    for i in range(ORDERS):
        charge = pay.ChargeRequest(order_id=order_id(i), amount_cents=amount(i), customer_id="c")
        calls.append((("Charge", order_id(i)), partial(stub.Charge, charge, metadata=EPOCH)))
        if i % 4 == 3:
            refund = pay.RefundRequest(order_id=order_id(i))
            calls.append((("Refund", order_id(i)), partial(stub.Refund, refund, metadata=EPOCH)))
    random.Random(21).shuffle(calls)
    return calls


async def check_payments(stub: PaymentStub, issued: set[Key], round_: Burst) -> int:
    async def fetch(token: str) -> tuple[Iterable[pay.PaymentRecord], str]:
        page = await stub.ListPayments(pay.ListPaymentsRequest(page_size=50, page_token=token))
        return page.payments, page.next_page_token

    payments = await list_all(fetch, lambda record: record.order_id)
    found: pay.PaymentRecord | None
    assert set(payments) <= {oid for _, oid in issued}
    applied_unanswered = 0
    for i in range(ORDERS):
        oid = order_id(i)
        found = payments.get(oid)
        state = found.state if found else pay.PAYMENT_STATE_NONE
        cents = found.amount_cents if found else 0
        refunded = ("Refund", oid) in issued
        tombstone = state == pay.PAYMENT_STATE_REFUNDED and cents == 0
        if not refunded:
            assert state != pay.PAYMENT_STATE_REFUNDED, oid
        refund_answer = round_.answers.get(("Refund", oid))
        if refund_answer is not None:
            assert isinstance(refund_answer, pay.RefundResponse)
            assert refund_answer.success
            assert state in (pay.PAYMENT_STATE_REFUNDED, pay.PAYMENT_STATE_DECLINED), oid
        answer = round_.answers.get(("Charge", oid))
        if answer is None:
            if state != pay.PAYMENT_STATE_NONE and not tombstone:
                assert cents == amount(i), oid
                applied_unanswered += 1
            continue
        assert isinstance(answer, pay.ChargeResponse)
        if answer.success:
            assert state == pay.PAYMENT_STATE_CHARGED or (
                refunded and state == pay.PAYMENT_STATE_REFUNDED
            ), oid
            assert cents == amount(i), oid
        elif answer.reason == "already_refunded":
            assert tombstone, oid
        else:
            assert (answer.reason, state, cents) == (
                "payment_declined",
                pay.PAYMENT_STATE_DECLINED,
                amount(i),
            ), oid
    return applied_unanswered


async def test_payment_survives_sigkill_mid_burst(tmp_path: Path) -> None:
    svc = start_service("payment", tmp_path, free_port())
    with svc:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            calls = payment_calls(payment_pb2_grpc.PaymentStub(channel))
            first = await burst(calls, kill=svc.kill)
        assert_cut_off(svc, first)
        svc.restart()
        await converge_payments(svc, {key for key, _ in calls}, first)


async def test_a_payment_replica_killed_mid_burst_leaves_the_other_consistent(
    pg_url: str, tmp_path: Path
) -> None:
    env = {"PAYMENT_DATABASE_URL": pg_url}
    doomed = start_service("payment", tmp_path / "a", free_port(), env)
    survivor = start_service("payment", tmp_path / "b", free_port(), env)
    with doomed, survivor:
        async with grpc.aio.insecure_channel(doomed.address) as channel:
            calls = payment_calls(payment_pb2_grpc.PaymentStub(channel))
            first = await burst(calls, kill=doomed.kill)
        assert_cut_off(doomed, first)
        await converge_payments(survivor, {key for key, _ in calls}, first)


async def converge_payments(svc: ServiceProcess, issued: set[Key], first: Burst) -> None:
    async with grpc.aio.insecure_channel(svc.address) as channel:
        stub: PaymentStub = payment_pb2_grpc.PaymentStub(channel)
        applied = await check_payments(stub, issued, first)
        print(f"{len(first.failures)} calls unanswered, {applied} of those charges applied")
        again = await burst(payment_calls(stub))
        assert not again.failures
        for key, answer in first.answers.items():
            assert again.answers[key] == answer, f"{key}: a repeat gets the first answer"
        await check_payments(stub, issued, again)
