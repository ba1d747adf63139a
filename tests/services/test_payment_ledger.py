"""The payment ledger's rules, through its port, against a real SQLite file and a real
PostgreSQL database (the `ledger_settings` fixture runs each test on both)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.errors import ConflictingRepeat, EpochFenced
from services.common.journal import Answer
from services.common.paging import PageRequest
from services.payment.backends import PaymentLedger, open_ledger
from services.payment.ledger import Payment, PaymentState, Reason
from tests.services.conftest import LedgerSettings


@pytest.fixture
async def payments(ledger_settings: LedgerSettings) -> AsyncIterator[PaymentLedger]:
    opened = await open_ledger(ledger_settings("payment"))
    await opened.ready()
    yield opened
    await opened.close()


async def charge(payments: PaymentLedger, order_id: str, amount: int, epoch: int = 0) -> Answer:
    return await payments.charge(order_id, epoch, amount, "cust_1")


async def everything(payments: PaymentLedger, limit: int = 1000) -> list[Payment]:
    seen: list[Payment] = []
    after = ""
    while True:
        found = await payments.list_payments(PageRequest(limit, after))
        seen.extend(found.records)
        if found.last_id is None:
            return seen
        after = found.last_id


async def test_charge_once_and_a_repeat_gets_the_first_answer(payments: PaymentLedger) -> None:
    assert await charge(payments, "o1", 5000) == Answer(True)
    assert await charge(payments, "o1", 5000) == Answer(True)
    assert await payments.payment("o1") == Payment("o1", PaymentState.CHARGED, 5000, "cust_1")
    assert len(await everything(payments)) == 1


async def test_over_500_00_is_declined(payments: PaymentLedger) -> None:
    assert await charge(payments, "ok", 50_000) == Answer(True)
    assert await charge(payments, "big", 50_001) == Answer(False, Reason.PAYMENT_DECLINED)
    declined = await payments.payment("big")
    assert (declined.state, declined.amount_cents, declined.reason) == (
        PaymentState.DECLINED,
        50_001,
        "payment_declined",
    )
    assert await charge(payments, "big", 50_001) == Answer(False, Reason.PAYMENT_DECLINED)


async def test_refund_gives_the_charge_back(payments: PaymentLedger) -> None:
    await charge(payments, "o1", 1234)
    assert await payments.refund("o1", 0) == Answer(True)
    assert (await payments.payment("o1")).state is PaymentState.REFUNDED
    assert (await payments.payment("o1")).amount_cents == 1234
    assert await payments.refund("o1", 0) == Answer(True)
    assert await charge(payments, "o1", 1234) == Answer(True), "a repeat gets its first answer"
    assert (await payments.payment("o1")).state is PaymentState.REFUNDED, "and changes nothing"


async def test_refund_before_charge_leaves_a_tombstone_that_refuses_the_charge(
    payments: PaymentLedger,
) -> None:
    assert await payments.refund("late", 0) == Answer(True)
    assert await payments.payment("late") == Payment("late", PaymentState.REFUNDED, 0)
    assert await charge(payments, "late", 100) == Answer(False, Reason.ALREADY_REFUNDED)
    assert await payments.payment("late") == Payment("late", PaymentState.REFUNDED, 0)


async def test_refund_of_a_declined_payment_keeps_it_declined(payments: PaymentLedger) -> None:
    await charge(payments, "o1", 90_000)
    assert await payments.refund("o1", 0) == Answer(True)
    assert (await payments.payment("o1")).state is PaymentState.DECLINED


async def test_a_repeat_with_another_amount_is_refused_and_changes_nothing(
    payments: PaymentLedger,
) -> None:
    await charge(payments, "o1", 100)
    with pytest.raises(ConflictingRepeat, match="amount_cents=100"):
        await charge(payments, "o1", 200)
    assert (await payments.payment("o1")).amount_cents == 100


async def test_epoch_fencing(payments: PaymentLedger) -> None:
    assert (await charge(payments, "o1", 100, epoch=7)).success
    with pytest.raises(EpochFenced):
        await charge(payments, "o1", 100, epoch=6)  # even a repeat
    with pytest.raises(EpochFenced):
        await payments.refund("o1", 0)
    assert (await payments.payment("o1")).state is PaymentState.CHARGED
    assert (await payments.refund("o1", 7)).success
    assert (await payments.payment("o1")).state is PaymentState.REFUNDED


async def test_unknown_payment_is_none(payments: PaymentLedger) -> None:
    assert await payments.payment("nope") == Payment("nope", PaymentState.NONE)


async def test_list_payments_pages_through_everything_in_order(payments: PaymentLedger) -> None:
    for i in range(12):
        await charge(payments, f"o{i:02d}", 60_000 if i == 3 else 100 + i)
    await payments.refund("o05", 0)
    await payments.refund("tomb", 0)
    seen = await everything(payments, limit=5)
    assert [p.order_id for p in seen] == [f"o{i:02d}" for i in range(12)] + ["tomb"]
    states = {p.order_id: p.state for p in seen}
    assert states["o03"] is PaymentState.DECLINED
    assert states["o05"] is PaymentState.REFUNDED
    assert states["tomb"] is PaymentState.REFUNDED
    charged = sum(p.amount_cents for p in seen if p.state is PaymentState.CHARGED)
    assert charged == sum(100 + i for i in range(12) if i not in (3, 5))
