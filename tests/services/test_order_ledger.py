"""The order ledger's rules, against a real SQLite file, one write unit per call."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from services.common.errors import ConflictingRepeat, EpochFenced, NotFound
from services.common.paging import PageRequest
from services.order import ledger
from services.order.ledger import LedgerOrder, LedgerStatus, OrderLine
from tests.services.helpers import ledger_conn, unit

LINES: list[OrderLine] = [("prod_1", 2, 5000), ("prod_2", 1, 1999)]


@pytest.fixture
def conn(tmp_path: Path) -> apsw.Connection:
    return ledger_conn(tmp_path / "order.db", ledger.MIGRATIONS)


def create(
    conn: apsw.Connection,
    order_id: str = "o1",
    customer: str = "cust_1",
    lines: list[OrderLine] = LINES,
    epoch: int = 0,
) -> LedgerOrder:
    return unit(conn, lambda c: ledger.create(c, order_id, epoch, customer, lines))


def update(
    conn: apsw.Connection, order_id: str, status: LedgerStatus, reason: str = "", epoch: int = 0
) -> bool:
    return unit(conn, lambda c: ledger.update_status(c, order_id, epoch, status, reason))


def test_create_is_pending_with_its_total_and_idempotent_on_the_id(
    conn: apsw.Connection,
) -> None:
    made = create(conn)
    assert made == LedgerOrder("o1", "cust_1", tuple(LINES), LedgerStatus.PENDING, 11_999)
    assert ledger.get(conn, "o1") == made
    assert create(conn, lines=list(reversed(LINES))) == made  # same items, other order
    update(conn, "o1", LedgerStatus.CONFIRMED)
    again = create(conn)
    assert again.status is LedgerStatus.CONFIRMED, "the existing order as it is now"
    assert conn.execute("SELECT count(*) FROM orders").fetchall() == [(1,)]


def test_create_with_another_customer_or_items_is_refused(conn: apsw.Connection) -> None:
    create(conn)
    with pytest.raises(ConflictingRepeat):
        create(conn, customer="cust_2")
    with pytest.raises(ConflictingRepeat):
        create(conn, lines=[("prod_1", 2, 5000)])
    assert ledger.get(conn, "o1") == LedgerOrder(
        "o1", "cust_1", tuple(LINES), LedgerStatus.PENDING, 11_999
    )


@pytest.mark.parametrize("final", [LedgerStatus.CONFIRMED, LedgerStatus.CANCELLED])
def test_a_terminal_status_never_changes(conn: apsw.Connection, final: LedgerStatus) -> None:
    other = LedgerStatus.CANCELLED if final is LedgerStatus.CONFIRMED else LedgerStatus.CONFIRMED
    create(conn)
    assert update(conn, "o1", final, "out_of_stock")
    assert update(conn, "o1", final, "something else"), "the same status again: success"
    assert not update(conn, "o1", other), "the other terminal status: refused"
    found = ledger.get(conn, "o1")
    assert found is not None
    assert found.status is final
    assert found.reason == ("out_of_stock" if final is LedgerStatus.CANCELLED else "")


def test_the_ledger_itself_refuses_to_move_a_terminal_order(conn: apsw.Connection) -> None:
    create(conn)
    update(conn, "o1", LedgerStatus.CANCELLED, "payment_declined")
    with pytest.raises(apsw.ConstraintError, match="never changes"):
        unit(conn, lambda c: c.execute("UPDATE orders SET status = 'CONFIRMED'"))


def test_unknown_order_and_pending_are_refused(conn: apsw.Connection) -> None:
    with pytest.raises(NotFound):
        update(conn, "nope", LedgerStatus.CONFIRMED)
    create(conn)
    with pytest.raises(ValueError, match="PENDING"):
        update(conn, "o1", LedgerStatus.PENDING)


def test_epoch_fencing(conn: apsw.Connection) -> None:
    create(conn, epoch=2)
    with pytest.raises(EpochFenced):
        create(conn, epoch=1)
    with pytest.raises(EpochFenced):
        update(conn, "o1", LedgerStatus.CONFIRMED, epoch=1)
    assert update(conn, "o1", LedgerStatus.CANCELLED, "cancelled_by_operator", epoch=4)
    with pytest.raises(EpochFenced):
        update(conn, "o1", LedgerStatus.CANCELLED, epoch=3)
    found = ledger.get(conn, "o1")
    assert found is not None
    assert found.status is LedgerStatus.CANCELLED


def test_list_orders_pages_through_everything_in_order(conn: apsw.Connection) -> None:
    for i in range(9):
        create(conn, f"o{i}", lines=[("prod_1", i + 1, 100), ("prod_0", 1, 1)])
    seen: list[LedgerOrder] = []
    after = ""
    while True:
        found = ledger.list_orders(conn, PageRequest(4, after))
        seen.extend(found.records)
        if found.last_id is None:
            break
        after = found.last_id
    assert [o.id for o in seen] == [f"o{i}" for i in range(9)]
    assert seen[3].items == (("prod_1", 4, 100), ("prod_0", 1, 1)), "items keep their order"
    assert seen[3].total_cents == 401
    assert seen == [ledger.get(conn, f"o{i}") for i in range(9)]
