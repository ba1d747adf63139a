"""The gateway's participant clients (orders/participants.py) against the real services:
the two sides of the gRPC contract agree on names, epochs and error translation. Each
test runs with the ledgers in SQLite files, then with all three in one PostgreSQL
database (a schema each)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from engine.errors import StaleEpoch
from orders.errors import CallRefused
from orders.participants import Participants, ServiceAddresses
from proto.inventory.v1 import inventory_pb2 as inv
from proto.order.v1 import order_pb2 as ordr
from proto.payment.v1 import payment_pb2 as pay
from tests.services.conftest import LedgerSettings
from tests.services.helpers import serving


@contextlib.asynccontextmanager
async def participants(settings: LedgerSettings) -> AsyncIterator[Participants]:
    async with (
        serving(settings("order")) as (order, _),
        serving(settings("payment")) as (payment, _),
        serving(settings("inventory")) as (inventory, _),
    ):
        client = Participants(
            ServiceAddresses(
                order=("127.0.0.1", order.port),
                payment=("127.0.0.1", payment.port),
                inventory=("127.0.0.1", inventory.port),
            )
        )
        try:
            yield client
        finally:
            await client.close()


async def test_a_saga_s_calls_and_their_answers(ledger_settings: LedgerSettings) -> None:
    async with participants(ledger_settings) as p:
        items = [ordr.OrderItem(product_id="prod_1", quantity=2, unit_price_cents=25_000)]
        made = await p.create_order("s1", "cust_1", items, epoch=1)
        assert (made.status, made.total_cents) == (ordr.PENDING, 50_000)
        reserved = await p.reserve("s1", [inv.StockItem(product_id="prod_1", quantity=2)], 1)
        assert reserved.success
        charged = await p.charge("s1", 50_000, "cust_1", 1)
        assert charged.success
        assert await p.set_order_status("s1", ordr.CONFIRMED, "", 1)
        order = await p.order.GetOrder(ordr.GetOrderRequest(id="s1"))
        payment = await p.payment.GetPayment(pay.GetPaymentRequest(order_id="s1"))
        reservation = await p.inventory.GetReservation(inv.GetReservationRequest(order_id="s1"))
        assert order.order.status == ordr.CONFIRMED
        assert (payment.state, payment.amount_cents) == (pay.PAYMENT_STATE_CHARGED, 50_000)
        assert reservation.state == inv.RESERVATION_STATE_RESERVED


async def test_refusals_and_stale_owners_are_told_apart(ledger_settings: LedgerSettings) -> None:
    async with participants(ledger_settings) as p:
        declined = await p.charge("s2", 50_001, "cust_1", 3)
        assert (declined.success, declined.reason) == (False, "payment_declined")
        with pytest.raises(StaleEpoch):
            await p.charge("s2", 50_001, "cust_1", 2)
        with pytest.raises(CallRefused):  # the same order, another amount: a caller bug
            await p.charge("s2", 100, "cust_1", 3)
        assert await p.release("s3", 1)  # the tombstone before the action
        late = await p.reserve("s3", [inv.StockItem(product_id="prod_1", quantity=1)], 1)
        assert (late.success, late.reason) == (False, "already_released")
