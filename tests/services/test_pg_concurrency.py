"""Two ledgers on one PostgreSQL database (two pools: what two replicas are to the
database), many copies of the same mutating call at once through both: applied once,
every copy gets the same answer (the inventory's oversell test is
tests/services/test_replicas.py, with real processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from services.common.backend import Ledger
from services.common.errors import EpochFenced
from services.common.journal import Answer
from services.common.paging import PageRequest
from services.inventory import backends as inventory
from services.inventory.ledger import ReservationState
from services.order import backends as order
from services.order.ledger import LedgerStatus
from services.payment import backends as payment
from services.payment.ledger import PaymentState
from tests.services.helpers import settings_for

L = TypeVar("L", bound=Ledger)
COPIES = 24


async def two(
    opener: Callable[..., Awaitable[L]], name: str, url: str, tmp_path: Path
) -> AsyncIterator[tuple[L, L]]:
    first = await opener(settings_for(name, tmp_path, database_url=url))
    second = await opener(settings_for(name, tmp_path, database_url=url))
    await asyncio.gather(first.ready(), second.ready())  # migrations serialized
    try:
        yield first, second
    finally:
        await asyncio.gather(first.close(), second.close())


@pytest.fixture
async def payments(
    pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[payment.PaymentLedger, payment.PaymentLedger]]:
    async for pair in two(payment.open_ledger, "payment", pg_url, tmp_path):
        yield pair


@pytest.fixture
async def orders(
    pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[order.OrderLedger, order.OrderLedger]]:
    async for pair in two(order.open_ledger, "order", pg_url, tmp_path):
        yield pair


async def test_the_same_charge_through_two_replicas_is_charged_once(
    payments: tuple[payment.PaymentLedger, payment.PaymentLedger],
) -> None:
    answers = await asyncio.gather(
        *(payments[i % 2].charge(f"o{j}", 1, 700 + j, "c") for j in range(8) for i in range(COPIES))
    )
    assert set(answers) == {Answer(True)}
    listed = (await payments[0].list_payments(page_request())).records
    assert [(p.order_id, p.state, p.amount_cents) for p in listed] == [
        (f"o{j}", PaymentState.CHARGED, 700 + j) for j in range(8)
    ]
    # A refund racing its own charge through the other replica: one wins, never both
    # a charge and no refund trace; the late charge meets the tombstone.
    raced = await asyncio.gather(
        payments[0].refund("race", 1), payments[1].charge("race", 1, 100, "c")
    )
    found = await payments[1].payment("race")
    assert found.state is PaymentState.REFUNDED
    assert raced[1] in (Answer(True), Answer(False, "already_refunded"))


async def test_the_same_order_created_through_two_replicas_exists_once(
    orders: tuple[order.OrderLedger, order.OrderLedger],
) -> None:
    lines = [("prod_1", 2, 500)]
    made = await asyncio.gather(
        *(orders[i % 2].create("o1", 1, "cust", lines) for i in range(COPIES))
    )
    assert len({o.id for o in made}) == 1
    assert all(o == made[0] for o in made)
    moved = await asyncio.gather(
        orders[0].update_status("o1", 2, LedgerStatus.CONFIRMED),
        orders[1].update_status("o1", 2, LedgerStatus.CANCELLED, "out_of_stock"),
    )
    assert sorted(moved) == [False, True], "exactly one terminal status wins"
    with pytest.raises(EpochFenced):  # epoch 2 was seen through the other replica
        await orders[1].update_status("o1", 1, LedgerStatus.CONFIRMED)
    listed = (await orders[1].list_orders(page_request())).records
    assert len(listed) == 1


def page_request() -> PageRequest:
    return PageRequest(limit=100, after="")


@pytest.fixture
async def inventories(
    pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[inventory.InventoryLedger, inventory.InventoryLedger]]:
    async for pair in two(inventory.open_ledger, "inventory", pg_url, tmp_path):
        yield pair


async def test_reserves_and_releases_of_the_same_products_race_without_harm(
    inventories: tuple[inventory.InventoryLedger, inventory.InventoryLedger],
) -> None:
    # Orders of two products each, reserved and released through both replicas at once:
    # every lock is taken in product-id order, so none of them waits on a deadlock.
    lines = [("prod_1", 1), ("prod_2", 1)]
    calls = [inventories[i % 2].reserve(f"m{i}", 1, lines) for i in range(10)]
    calls += [inventories[(i + 1) % 2].release(f"m{i}", 1) for i in range(0, 10, 2)]
    answers = await asyncio.gather(*calls)
    assert all(a.success or a.reason == "already_released" for a in answers)
    view = await inventories[0].stock()
    for product, initial in view.initial.items():
        assert initial == view.available[product] + view.reserved[product], product
    held = [await inventories[1].reservation(f"m{i}") for i in range(10)]
    reserved = sum(1 for r in held if r.state is ReservationState.RESERVED)
    assert view.reserved["prod_1"] == view.reserved["prod_2"] == reserved
    assert all(r.state is ReservationState.RESERVED for r in held[1::2]), "odd: never released"
