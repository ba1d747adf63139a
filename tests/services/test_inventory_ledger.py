"""The inventory ledger's rules, through its port, against a real SQLite file and a real
PostgreSQL database (the `ledger_settings` fixture runs each test on both)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace

import apsw
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.backend import PgBacked, SqliteBacked
from services.common.errors import ConflictingRepeat, EpochFenced
from services.common.journal import Answer
from services.common.paging import PageRequest
from services.inventory import ledger
from services.inventory.backends import InventoryLedger, open_ledger
from services.inventory.ledger import Reason, ReservationState
from tests.services.conftest import LedgerSettings


@pytest.fixture
async def inv(ledger_settings: LedgerSettings) -> AsyncIterator[InventoryLedger]:
    opened = await open_ledger(ledger_settings("inventory"))
    await opened.ready()
    yield opened
    await opened.close()


async def available(inv: InventoryLedger) -> dict[str, int]:
    return dict((await inv.stock()).available)


async def assert_balanced(inv: InventoryLedger) -> None:
    view = await inv.stock()
    for product, initial in view.initial.items():
        assert view.available[product] >= 0
        assert initial == view.available[product] + view.reserved[product], product


async def test_reserve_takes_every_item_and_a_repeat_gets_the_first_answer(
    inv: InventoryLedger,
) -> None:
    items = [("prod_1", 2), ("prod_2", 3)]
    assert await inv.reserve("o1", 0, items) == Answer(True)
    assert await available(inv) == {"prod_1": 13, "prod_2": 7, "prod_3": 0}
    assert await inv.reserve("o1", 0, list(reversed(items))) == Answer(True)  # same set
    assert await available(inv) == {"prod_1": 13, "prod_2": 7, "prod_3": 0}, "applied once"
    found = await inv.reservation("o1")
    assert found.state is ReservationState.RESERVED
    assert found.items == (("prod_1", 2), ("prod_2", 3))
    await assert_balanced(inv)


async def test_reserve_is_all_or_nothing(inv: InventoryLedger) -> None:
    assert await inv.reserve("o1", 0, [("prod_1", 2), ("prod_2", 11)]) == Answer(
        False, Reason.OUT_OF_STOCK
    )
    assert await available(inv) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}
    found = await inv.reservation("o1")
    assert (found.state, found.reason) == (ReservationState.REJECTED, "out_of_stock")
    assert found.items == (("prod_1", 2), ("prod_2", 11))  # what was asked, for the audit
    again = await inv.reserve("o1", 0, [("prod_1", 2), ("prod_2", 11)])
    assert again.reason == "out_of_stock"


async def test_prod_3_starts_at_zero_and_unknown_products_are_rejected(
    inv: InventoryLedger,
) -> None:
    assert await inv.reserve("o1", 0, [("prod_3", 1)]) == Answer(False, Reason.OUT_OF_STOCK)
    assert await inv.reserve("o2", 0, [("prod_1", 99), ("nope", 1)]) == Answer(
        False, Reason.UNKNOWN_PRODUCT
    )
    assert (await inv.reservation("o2")).state is ReservationState.REJECTED
    assert await available(inv) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}


async def test_the_last_units_go_to_exactly_one_order(inv: InventoryLedger) -> None:
    assert (await inv.reserve("a", 0, [("prod_2", 10)])).success
    assert await inv.reserve("b", 0, [("prod_2", 1)]) == Answer(False, Reason.OUT_OF_STOCK)
    assert (await available(inv))["prod_2"] == 0
    await assert_balanced(inv)


async def test_release_gives_the_stock_back(inv: InventoryLedger) -> None:
    await inv.reserve("o1", 0, [("prod_1", 5)])
    assert await inv.release("o1", 0) == Answer(True)
    assert (await available(inv))["prod_1"] == 15
    found = await inv.reservation("o1")
    assert (found.state, found.items) == (ReservationState.RELEASED, (("prod_1", 5),))
    assert await inv.release("o1", 0) == Answer(True)
    assert (await available(inv))["prod_1"] == 15, "a repeated release gives nothing back twice"
    # A repeat of the reserve gets its first answer, and takes nothing again.
    assert await inv.reserve("o1", 0, [("prod_1", 5)]) == Answer(True)
    assert (await available(inv))["prod_1"] == 15
    assert (await inv.reservation("o1")).state is ReservationState.RELEASED
    await assert_balanced(inv)


async def test_release_before_reserve_leaves_a_tombstone_that_refuses_the_reserve(
    inv: InventoryLedger,
) -> None:
    assert await inv.release("late", 0) == Answer(True)
    tomb = await inv.reservation("late")
    assert (tomb.state, tomb.items) == (ReservationState.RELEASED, ())
    refused = Answer(False, Reason.ALREADY_RELEASED)
    assert await inv.reserve("late", 0, [("prod_1", 1)]) == refused
    assert await inv.reserve("late", 0, [("prod_1", 1)]) == refused
    assert (await available(inv))["prod_1"] == 15
    assert (await inv.reservation("late")).state is ReservationState.RELEASED


async def test_release_of_a_rejected_reservation_keeps_it_rejected(inv: InventoryLedger) -> None:
    await inv.reserve("o1", 0, [("prod_3", 1)])
    assert await inv.release("o1", 0) == Answer(True)
    assert (await inv.reservation("o1")).state is ReservationState.REJECTED
    assert (await available(inv))["prod_3"] == 0


async def test_a_repeat_with_other_items_is_refused_and_changes_nothing(
    inv: InventoryLedger,
) -> None:
    await inv.reserve("o1", 0, [("prod_1", 2)])
    with pytest.raises(ConflictingRepeat, match="prod_1x2"):
        await inv.reserve("o1", 0, [("prod_1", 3)])
    assert (await available(inv))["prod_1"] == 13
    assert (await inv.reservation("o1")).items == (("prod_1", 2),)


async def test_epoch_fencing(inv: InventoryLedger) -> None:
    assert (await inv.reserve("o1", 3, [("prod_1", 1)])).success
    with pytest.raises(EpochFenced) as info:
        await inv.reserve("o1", 2, [("prod_1", 1)])  # refused even though it is a repeat
    assert (info.value.epoch, info.value.highest) == (2, 3)
    with pytest.raises(EpochFenced):
        await inv.release("o1", 2)
    assert (await inv.reservation("o1")).state is ReservationState.RESERVED
    assert (await inv.reserve("o1", 3, [("prod_1", 1)])).success  # equal: accepted
    assert (await inv.release("o1", 5)).success  # higher: accepted, and raises the bar
    with pytest.raises(EpochFenced):
        await inv.release("o1", 4)
    assert (await inv.reserve("other", 0, [("prod_1", 1)])).success  # per order
    await assert_balanced(inv)


async def test_the_seed_is_applied_only_to_a_new_ledger(
    inv: InventoryLedger, ledger_settings: LedgerSettings
) -> None:
    await inv.reserve("o1", 0, [("prod_1", 1)])
    # A second opening of the same ledger (a restart, or another replica) with other seed
    # stock: the ledger is not new, so nothing changes.
    other = await open_ledger(
        replace(ledger_settings("inventory"), seed_stock=(("prod_1", 100), ("prod_9", 1)))
    )
    try:
        await other.ready()
        assert (await other.stock()).initial == {"prod_1": 15, "prod_2": 10, "prod_3": 0}
        assert (await other.stock()).available["prod_1"] == 14
    finally:
        await other.close()


async def test_stock_can_never_go_negative(inv: InventoryLedger) -> None:
    if isinstance(inv, SqliteBacked):
        with pytest.raises(apsw.ConstraintError):
            await inv.store.write(lambda c: c.execute("UPDATE products SET available = -1"))
    else:
        assert isinstance(inv, PgBacked)
        with pytest.raises(asyncpg.CheckViolationError):
            await inv.store.write(
                lambda c: c.execute("UPDATE inventory_svc.products SET available = -1")
            )
    assert await available(inv) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}


async def test_stock_of_named_products(inv: InventoryLedger) -> None:
    await inv.reserve("o1", 0, [("prod_2", 4)])
    view = await inv.stock(["prod_2", "nope"])
    assert (view.available, view.initial, view.reserved) == (
        {"prod_2": 6},
        {"prod_2": 10},
        {"prod_2": 4},
    )


async def test_list_reservations_pages_through_everything_in_order(inv: InventoryLedger) -> None:
    for i in range(25):
        await inv.reserve(f"o{i:02d}", 0, [("prod_1", 1)] if i % 3 else [("nope", 1)])
    await inv.release("o01", 0)
    await inv.release("zz-tombstone", 0)
    seen: list[ledger.Reservation] = []
    page = PageRequest(limit=7, after="")
    while True:
        found = await inv.list_reservations(page)
        assert len(found.records) <= 7
        seen.extend(found.records)
        if found.last_id is None:
            break
        page = PageRequest(7, found.last_id)
    assert [r.order_id for r in seen] == [f"o{i:02d}" for i in range(25)] + ["zz-tombstone"]
    by_id = {r.order_id: r for r in seen}
    assert by_id["o00"].state is ReservationState.REJECTED
    assert by_id["o00"].reason == "unknown_product"
    assert by_id["o01"].state is ReservationState.RELEASED
    assert by_id["o02"] == ledger.Reservation("o02", ReservationState.RESERVED, (("prod_1", 1),))
    assert by_id["zz-tombstone"].items == ()
    assert by_id["o02"] == await inv.reservation("o02")


ORDERS = st.sampled_from(["a", "b", "c", "d"])
ITEMS = st.lists(
    st.tuples(st.sampled_from(["prod_1", "prod_2", "prod_3", "nope"]), st.integers(1, 8)),
    min_size=1,
    max_size=3,
    unique_by=lambda line: line[0],
)
OPS = st.lists(st.tuples(st.sampled_from(["reserve", "release"]), ORDERS, ITEMS), max_size=30)
_RUNS = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_any_sequence_of_calls_keeps_the_stock_balanced(
    inv: InventoryLedger, ops: list[tuple[str, str, list[tuple[str, int]]]]
) -> None:
    # One ledger for every example: each example's orders are its own (a fresh prefix).
    run = f"r{next(_RUNS)}-"
    first: dict[tuple[str, str], Answer] = {}
    for operation, order, items in ops:
        order_id = run + order
        try:
            if operation == "reserve":
                answer = await inv.reserve(order_id, 0, items)
            else:
                answer = await inv.release(order_id, 0)
        except ConflictingRepeat:
            continue
        # A repeat of (order, operation) always gets the first answer.
        assert first.setdefault((order_id, operation), answer) == answer
        await assert_balanced(inv)
    for order in "abcd":
        found = await inv.reservation(run + order)
        if ("release", run + order) in first:
            assert found.state in (ReservationState.RELEASED, ReservationState.REJECTED)
