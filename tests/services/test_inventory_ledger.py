"""The inventory ledger's rules, against a real SQLite file, one write unit per call."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import ConflictingRepeat, EpochFenced
from services.common.journal import Answer
from services.common.paging import PageRequest
from services.inventory import ledger
from services.inventory.ledger import Reason, ReservationState
from tests.services.helpers import SEED, ledger_conn, unit


@pytest.fixture
def conn(tmp_path: Path) -> apsw.Connection:
    conn = ledger_conn(tmp_path / "inventory.db", ledger.MIGRATIONS)
    assert unit(conn, lambda c: ledger.seed(c, SEED))
    return conn


def reserve(
    conn: apsw.Connection, order_id: str, items: list[tuple[str, int]], epoch: int = 0
) -> Answer:
    return unit(conn, lambda c: ledger.reserve(c, order_id, epoch, items))


def release(conn: apsw.Connection, order_id: str, epoch: int = 0) -> Answer:
    return unit(conn, lambda c: ledger.release(c, order_id, epoch))


def available(conn: apsw.Connection) -> dict[str, int]:
    return dict(ledger.stock(conn).available)


def assert_balanced(conn: apsw.Connection) -> None:
    view = ledger.stock(conn)
    for product, initial in view.initial.items():
        assert view.available[product] >= 0
        assert initial == view.available[product] + view.reserved[product], product


def test_reserve_takes_every_item_and_a_repeat_gets_the_first_answer(
    conn: apsw.Connection,
) -> None:
    items = [("prod_1", 2), ("prod_2", 3)]
    assert reserve(conn, "o1", items) == Answer(True)
    assert available(conn) == {"prod_1": 13, "prod_2": 7, "prod_3": 0}
    assert reserve(conn, "o1", list(reversed(items))) == Answer(True)  # same set of items
    assert available(conn) == {"prod_1": 13, "prod_2": 7, "prod_3": 0}, "applied once"
    found = ledger.reservation(conn, "o1")
    assert found.state is ReservationState.RESERVED
    assert found.items == (("prod_1", 2), ("prod_2", 3))
    assert_balanced(conn)


def test_reserve_is_all_or_nothing(conn: apsw.Connection) -> None:
    assert reserve(conn, "o1", [("prod_1", 2), ("prod_2", 11)]) == Answer(
        False, Reason.OUT_OF_STOCK
    )
    assert available(conn) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}
    found = ledger.reservation(conn, "o1")
    assert (found.state, found.reason) == (ReservationState.REJECTED, "out_of_stock")
    assert found.items == (("prod_1", 2), ("prod_2", 11))  # what was asked, for the audit
    assert reserve(conn, "o1", [("prod_1", 2), ("prod_2", 11)]).reason == "out_of_stock"


def test_prod_3_starts_at_zero_and_unknown_products_are_rejected(conn: apsw.Connection) -> None:
    assert reserve(conn, "o1", [("prod_3", 1)]) == Answer(False, Reason.OUT_OF_STOCK)
    assert reserve(conn, "o2", [("prod_1", 99), ("nope", 1)]) == Answer(
        False, Reason.UNKNOWN_PRODUCT
    )
    assert ledger.reservation(conn, "o2").state is ReservationState.REJECTED
    assert available(conn) == {"prod_1": 15, "prod_2": 10, "prod_3": 0}


def test_the_last_units_go_to_exactly_one_order(conn: apsw.Connection) -> None:
    assert reserve(conn, "a", [("prod_2", 10)]).success
    assert reserve(conn, "b", [("prod_2", 1)]) == Answer(False, Reason.OUT_OF_STOCK)
    assert available(conn)["prod_2"] == 0
    assert_balanced(conn)


def test_release_gives_the_stock_back(conn: apsw.Connection) -> None:
    reserve(conn, "o1", [("prod_1", 5)])
    assert release(conn, "o1") == Answer(True)
    assert available(conn)["prod_1"] == 15
    found = ledger.reservation(conn, "o1")
    assert (found.state, found.items) == (ReservationState.RELEASED, (("prod_1", 5),))
    assert release(conn, "o1") == Answer(True)
    assert available(conn)["prod_1"] == 15, "a repeated release gives nothing back twice"
    # A repeat of the reserve gets its first answer, and takes nothing again.
    assert reserve(conn, "o1", [("prod_1", 5)]) == Answer(True)
    assert available(conn)["prod_1"] == 15
    assert ledger.reservation(conn, "o1").state is ReservationState.RELEASED
    assert_balanced(conn)


def test_release_before_reserve_leaves_a_tombstone_that_refuses_the_reserve(
    conn: apsw.Connection,
) -> None:
    assert release(conn, "late") == Answer(True)
    tomb = ledger.reservation(conn, "late")
    assert (tomb.state, tomb.items) == (ReservationState.RELEASED, ())
    assert reserve(conn, "late", [("prod_1", 1)]) == Answer(False, Reason.ALREADY_RELEASED)
    assert reserve(conn, "late", [("prod_1", 1)]) == Answer(False, Reason.ALREADY_RELEASED)
    assert available(conn)["prod_1"] == 15
    assert ledger.reservation(conn, "late").state is ReservationState.RELEASED


def test_release_of_a_rejected_reservation_keeps_it_rejected(conn: apsw.Connection) -> None:
    reserve(conn, "o1", [("prod_3", 1)])
    assert release(conn, "o1") == Answer(True)
    assert ledger.reservation(conn, "o1").state is ReservationState.REJECTED
    assert available(conn)["prod_3"] == 0


def test_a_repeat_with_other_items_is_refused_and_changes_nothing(conn: apsw.Connection) -> None:
    reserve(conn, "o1", [("prod_1", 2)])
    with pytest.raises(ConflictingRepeat, match="prod_1x2"):
        reserve(conn, "o1", [("prod_1", 3)])
    assert available(conn)["prod_1"] == 13
    assert ledger.reservation(conn, "o1").items == (("prod_1", 2),)


def test_epoch_fencing(conn: apsw.Connection) -> None:
    assert reserve(conn, "o1", [("prod_1", 1)], epoch=3).success
    with pytest.raises(EpochFenced) as info:
        reserve(conn, "o1", [("prod_1", 1)], epoch=2)  # refused even though it is a repeat
    assert (info.value.epoch, info.value.highest) == (2, 3)
    with pytest.raises(EpochFenced):
        release(conn, "o1", epoch=2)
    assert ledger.reservation(conn, "o1").state is ReservationState.RESERVED
    assert reserve(conn, "o1", [("prod_1", 1)], epoch=3).success  # equal: accepted
    assert release(conn, "o1", epoch=5).success  # higher: accepted, and raises the bar
    with pytest.raises(EpochFenced):
        release(conn, "o1", epoch=4)
    assert reserve(conn, "other", [("prod_1", 1)], epoch=0).success  # per order
    assert_balanced(conn)


def test_the_seed_is_applied_only_to_a_new_ledger(conn: apsw.Connection) -> None:
    reserve(conn, "o1", [("prod_1", 1)])
    assert not unit(conn, lambda c: ledger.seed(c, (("prod_1", 100), ("prod_9", 1))))
    assert ledger.stock(conn).initial == {"prod_1": 15, "prod_2": 10, "prod_3": 0}


def test_stock_can_never_go_negative(conn: apsw.Connection) -> None:
    with pytest.raises(apsw.ConstraintError):
        unit(conn, lambda c: c.execute("UPDATE products SET available = -1"))


def test_stock_of_named_products(conn: apsw.Connection) -> None:
    reserve(conn, "o1", [("prod_2", 4)])
    view = ledger.stock(conn, ["prod_2", "nope"])
    assert (view.available, view.initial, view.reserved) == (
        {"prod_2": 6},
        {"prod_2": 10},
        {"prod_2": 4},
    )


def test_list_reservations_pages_through_everything_in_order(conn: apsw.Connection) -> None:
    for i in range(25):
        reserve(conn, f"o{i:02d}", [("prod_1", 1)] if i % 3 else [("nope", 1)])
    release(conn, "o01")
    release(conn, "zz-tombstone")
    seen: list[ledger.Reservation] = []
    page = PageRequest(limit=7, after="")
    while True:
        found = ledger.list_reservations(conn, page)
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
    assert by_id["o02"] == ledger.reservation(conn, "o02")


ORDERS = st.sampled_from(["a", "b", "c", "d"])
ITEMS = st.lists(
    st.tuples(st.sampled_from(["prod_1", "prod_2", "prod_3", "nope"]), st.integers(1, 8)),
    min_size=1,
    max_size=3,
    unique_by=lambda line: line[0],
)
OPS = st.lists(st.tuples(st.sampled_from(["reserve", "release"]), ORDERS, ITEMS), max_size=30)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_any_sequence_of_calls_keeps_the_stock_balanced(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, list[tuple[str, int]]]]
) -> None:
    conn = ledger_conn(tmp_path_factory.mktemp("prop") / "inventory.db", ledger.MIGRATIONS)
    unit(conn, lambda c: ledger.seed(c, SEED))
    first: dict[tuple[str, str], Answer] = {}
    for operation, order_id, items in ops:
        try:
            if operation == "reserve":
                answer = reserve(conn, order_id, items)
            else:
                answer = release(conn, order_id)
        except ConflictingRepeat:
            continue
        # A repeat of (order, operation) always gets the first answer.
        assert first.setdefault((order_id, operation), answer) == answer
        assert_balanced(conn)
    for order_id in "abcd":
        found = ledger.reservation(conn, order_id)
        if ("release", order_id) in first:
            assert found.state in (ReservationState.RELEASED, ReservationState.REJECTED)
