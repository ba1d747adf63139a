"""The order ledger's rules, through its port, against a real SQLite file and a real
PostgreSQL database (the `ledger_settings` fixture runs each test on both)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import apsw
import asyncpg
import pytest

from services.common.backend import PgBacked, SqliteBacked
from services.common.errors import ConflictingRepeat, EpochFenced, NotFound
from services.common.paging import PageRequest
from services.order.backends import OrderLedger, open_ledger
from services.order.ledger import LedgerOrder, LedgerStatus, OrderLine
from tests.services.conftest import LedgerSettings

LINES: list[OrderLine] = [("prod_1", 2, 5000), ("prod_2", 1, 1999)]


@pytest.fixture
async def orders(ledger_settings: LedgerSettings) -> AsyncIterator[OrderLedger]:
    opened = await open_ledger(ledger_settings("order"))
    await opened.ready()
    yield opened
    await opened.close()


async def create(
    orders: OrderLedger,
    order_id: str = "o1",
    customer: str = "cust_1",
    lines: list[OrderLine] = LINES,
    epoch: int = 0,
) -> LedgerOrder:
    return await orders.create(order_id, epoch, customer, lines)


async def everything(orders: OrderLedger, limit: int = 1000) -> list[LedgerOrder]:
    seen: list[LedgerOrder] = []
    after = ""
    while True:
        found = await orders.list_orders(PageRequest(limit, after))
        seen.extend(found.records)
        if found.last_id is None:
            return seen
        after = found.last_id


async def test_create_is_pending_with_its_total_and_idempotent_on_the_id(
    orders: OrderLedger,
) -> None:
    made = await create(orders)
    assert made == LedgerOrder("o1", "cust_1", tuple(LINES), LedgerStatus.PENDING, 11_999)
    assert await orders.get("o1") == made
    assert await create(orders, lines=list(reversed(LINES))) == made  # same items, reordered
    await orders.update_status("o1", 0, LedgerStatus.CONFIRMED)
    again = await create(orders)
    assert again.status is LedgerStatus.CONFIRMED, "the existing order as it is now"
    assert [o.id for o in await everything(orders)] == ["o1"]


async def test_create_with_another_customer_or_items_is_refused(orders: OrderLedger) -> None:
    await create(orders)
    with pytest.raises(ConflictingRepeat):
        await create(orders, customer="cust_2")
    with pytest.raises(ConflictingRepeat):
        await create(orders, lines=[("prod_1", 2, 5000)])
    assert await orders.get("o1") == LedgerOrder(
        "o1", "cust_1", tuple(LINES), LedgerStatus.PENDING, 11_999
    )


@pytest.mark.parametrize("final", [LedgerStatus.CONFIRMED, LedgerStatus.CANCELLED])
async def test_a_terminal_status_never_changes(orders: OrderLedger, final: LedgerStatus) -> None:
    other = LedgerStatus.CANCELLED if final is LedgerStatus.CONFIRMED else LedgerStatus.CONFIRMED
    await create(orders)
    assert await orders.update_status("o1", 0, final, "out_of_stock")
    assert await orders.update_status("o1", 0, final, "something else"), "the same: success"
    assert not await orders.update_status("o1", 0, other), "the other terminal status: refused"
    found = await orders.get("o1")
    assert found is not None
    assert found.status is final
    assert found.reason == ("out_of_stock" if final is LedgerStatus.CANCELLED else "")


async def test_the_ledger_itself_refuses_to_move_a_terminal_order(orders: OrderLedger) -> None:
    await create(orders)
    await orders.update_status("o1", 0, LedgerStatus.CANCELLED, "payment_declined")
    if isinstance(orders, SqliteBacked):
        with pytest.raises(apsw.ConstraintError, match="never changes"):
            await orders.store.write(lambda c: c.execute("UPDATE orders SET status = 'CONFIRMED'"))
    else:
        assert isinstance(orders, PgBacked)
        with pytest.raises(asyncpg.CheckViolationError, match="never changes"):
            await orders.store.write(
                lambda c: c.execute("UPDATE order_svc.orders SET status = 'CONFIRMED'")
            )
    found = await orders.get("o1")
    assert found is not None
    assert found.status is LedgerStatus.CANCELLED


async def test_unknown_order_and_pending_are_refused(orders: OrderLedger) -> None:
    with pytest.raises(NotFound):
        await orders.update_status("nope", 0, LedgerStatus.CONFIRMED)
    await create(orders)
    with pytest.raises(ValueError, match="PENDING"):
        await orders.update_status("o1", 0, LedgerStatus.PENDING)


async def test_epoch_fencing(orders: OrderLedger) -> None:
    await create(orders, epoch=2)
    with pytest.raises(EpochFenced):
        await create(orders, epoch=1)
    with pytest.raises(EpochFenced):
        await orders.update_status("o1", 1, LedgerStatus.CONFIRMED)
    assert await orders.update_status("o1", 4, LedgerStatus.CANCELLED, "cancelled_by_operator")
    with pytest.raises(EpochFenced):
        await orders.update_status("o1", 3, LedgerStatus.CANCELLED)
    found = await orders.get("o1")
    assert found is not None
    assert found.status is LedgerStatus.CANCELLED


async def test_list_orders_pages_through_everything_in_order(orders: OrderLedger) -> None:
    for i in range(9):
        await create(orders, f"o{i}", lines=[("prod_1", i + 1, 100), ("prod_0", 1, 1)])
    seen = await everything(orders, limit=4)
    assert [o.id for o in seen] == [f"o{i}" for i in range(9)]
    assert seen[3].items == (("prod_1", 4, 100), ("prod_0", 1, 1)), "items keep their order"
    assert seen[3].total_cents == 401
    assert seen == [await orders.get(f"o{i}") for i in range(9)]
