"""The payment ledger's rules, against a real SQLite file, one write unit per call."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from services.common.errors import ConflictingRepeat, EpochFenced
from services.common.journal import Answer
from services.common.paging import PageRequest
from services.payment import ledger
from services.payment.ledger import Payment, PaymentState, Reason
from tests.services.helpers import ledger_conn, unit


@pytest.fixture
def conn(tmp_path: Path) -> apsw.Connection:
    return ledger_conn(tmp_path / "payment.db", ledger.MIGRATIONS)


def charge(conn: apsw.Connection, order_id: str, amount: int, epoch: int = 0) -> Answer:
    return unit(conn, lambda c: ledger.charge(c, order_id, epoch, amount, "cust_1"))


def refund(conn: apsw.Connection, order_id: str, epoch: int = 0) -> Answer:
    return unit(conn, lambda c: ledger.refund(c, order_id, epoch))


def test_charge_once_and_a_repeat_gets_the_first_answer(conn: apsw.Connection) -> None:
    assert charge(conn, "o1", 5000) == Answer(True)
    assert charge(conn, "o1", 5000) == Answer(True)
    assert ledger.payment(conn, "o1") == Payment("o1", PaymentState.CHARGED, 5000, "cust_1")
    assert conn.execute("SELECT count(*) FROM payments").fetchall() == [(1,)]


def test_over_500_00_is_declined(conn: apsw.Connection) -> None:
    assert charge(conn, "ok", 50_000) == Answer(True)
    assert charge(conn, "big", 50_001) == Answer(False, Reason.PAYMENT_DECLINED)
    declined = ledger.payment(conn, "big")
    assert (declined.state, declined.amount_cents, declined.reason) == (
        PaymentState.DECLINED,
        50_001,
        "payment_declined",
    )
    assert charge(conn, "big", 50_001) == Answer(False, Reason.PAYMENT_DECLINED)


def test_refund_gives_the_charge_back(conn: apsw.Connection) -> None:
    charge(conn, "o1", 1234)
    assert refund(conn, "o1") == Answer(True)
    assert ledger.payment(conn, "o1").state is PaymentState.REFUNDED
    assert ledger.payment(conn, "o1").amount_cents == 1234
    assert refund(conn, "o1") == Answer(True)
    assert charge(conn, "o1", 1234) == Answer(True), "a repeat gets its first answer"
    assert ledger.payment(conn, "o1").state is PaymentState.REFUNDED, "and changes nothing"


def test_refund_before_charge_leaves_a_tombstone_that_refuses_the_charge(
    conn: apsw.Connection,
) -> None:
    assert refund(conn, "late") == Answer(True)
    assert ledger.payment(conn, "late") == Payment("late", PaymentState.REFUNDED, 0)
    assert charge(conn, "late", 100) == Answer(False, Reason.ALREADY_REFUNDED)
    assert ledger.payment(conn, "late") == Payment("late", PaymentState.REFUNDED, 0)


def test_refund_of_a_declined_payment_keeps_it_declined(conn: apsw.Connection) -> None:
    charge(conn, "o1", 90_000)
    assert refund(conn, "o1") == Answer(True)
    assert ledger.payment(conn, "o1").state is PaymentState.DECLINED


def test_a_repeat_with_another_amount_is_refused_and_changes_nothing(
    conn: apsw.Connection,
) -> None:
    charge(conn, "o1", 100)
    with pytest.raises(ConflictingRepeat, match="amount_cents=100"):
        charge(conn, "o1", 200)
    assert ledger.payment(conn, "o1").amount_cents == 100


def test_epoch_fencing(conn: apsw.Connection) -> None:
    assert charge(conn, "o1", 100, epoch=7).success
    with pytest.raises(EpochFenced):
        charge(conn, "o1", 100, epoch=6)  # even a repeat
    with pytest.raises(EpochFenced):
        refund(conn, "o1", epoch=0)
    assert ledger.payment(conn, "o1").state is PaymentState.CHARGED
    assert refund(conn, "o1", epoch=7).success
    assert ledger.payment(conn, "o1").state is PaymentState.REFUNDED


def test_unknown_payment_is_none(conn: apsw.Connection) -> None:
    assert ledger.payment(conn, "nope") == Payment("nope", PaymentState.NONE)


def test_list_payments_pages_through_everything_in_order(conn: apsw.Connection) -> None:
    for i in range(12):
        charge(conn, f"o{i:02d}", 60_000 if i == 3 else 100 + i)
    refund(conn, "o05")
    refund(conn, "tomb")
    seen: list[Payment] = []
    after = ""
    while True:
        found = ledger.list_payments(conn, PageRequest(5, after))
        seen.extend(found.records)
        if found.last_id is None:
            break
        after = found.last_id
    assert [p.order_id for p in seen] == [f"o{i:02d}" for i in range(12)] + ["tomb"]
    states = {p.order_id: p.state for p in seen}
    assert states["o03"] is PaymentState.DECLINED
    assert states["o05"] is PaymentState.REFUNDED
    assert states["tomb"] is PaymentState.REFUNDED
    charged = sum(p.amount_cents for p in seen if p.state is PaymentState.CHARGED)
    assert charged == sum(100 + i for i in range(12) if i not in (3, 5))
