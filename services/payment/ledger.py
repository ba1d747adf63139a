"""The payment ledger: at most one payment per order, in integer cents.

Plain functions over an apsw connection; each mutating one is meant to be ONE write unit
of the service's Writer (see `services.common.journal.once`). The business rules:

- Charge takes the amount (CHARGED), unless it is over 500.00 (`DECLINE_ABOVE_CENTS`):
  then it is declined (DECLINED, reason `payment_declined`; the amount asked is kept for
  the audit). After a Refund of the same order it is refused with `already_refunded`.
- Refund gives a charge back (REFUNDED, the amount kept). With nothing charged it leaves a
  REFUNDED tombstone of amount 0 so that a late Charge is refused; a DECLINED payment stays
  DECLINED. Refund always succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import apsw

from services.common.fencing import FENCES_SCHEMA
from services.common.journal import JOURNAL_SCHEMA, Answer, MutatingCall, once
from services.common.paging import LedgerPage, PageRequest

__all__ = [
    "DECLINE_ABOVE_CENTS",
    "MIGRATIONS",
    "Payment",
    "PaymentState",
    "Reason",
    "charge",
    "charge_request",
    "decide_charge",
    "decide_refund",
    "list_payments",
    "payment",
    "refund",
]

DECLINE_ABOVE_CENTS: Final = 50_000  # 500.00: more than this is declined

MIGRATIONS: Final[tuple[str, ...]] = (
    FENCES_SCHEMA
    + JOURNAL_SCHEMA
    + """
CREATE TABLE payments (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('CHARGED', 'REFUNDED', 'DECLINED')),
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
    customer_id TEXT NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
""",
)


class PaymentState(StrEnum):
    NONE = "NONE"
    CHARGED = "CHARGED"
    REFUNDED = "REFUNDED"
    DECLINED = "DECLINED"


class Reason(StrEnum):
    PAYMENT_DECLINED = "payment_declined"
    ALREADY_REFUNDED = "already_refunded"


@dataclass(frozen=True, slots=True)
class Payment:
    order_id: str
    state: PaymentState
    amount_cents: int = 0
    customer_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    answer: Answer
    state: PaymentState | None  # the payment's new state; None leaves the ledger as is


# --- pure decisions ------------------------------------------------------------------


def decide_charge(current: Payment, amount_cents: int) -> Decision:
    if current.state is PaymentState.REFUNDED:
        return Decision(Answer(False, Reason.ALREADY_REFUNDED), None)
    if current.state is PaymentState.CHARGED:
        return Decision(Answer(True), None)
    if current.state is PaymentState.DECLINED:
        return Decision(Answer(False, current.reason), None)
    if amount_cents > DECLINE_ABOVE_CENTS:
        return Decision(Answer(False, Reason.PAYMENT_DECLINED), PaymentState.DECLINED)
    return Decision(Answer(True), PaymentState.CHARGED)


def decide_refund(current: Payment) -> Decision:
    if current.state in (PaymentState.NONE, PaymentState.CHARGED):
        return Decision(Answer(True), PaymentState.REFUNDED)
    return Decision(Answer(True), None)  # already REFUNDED, or DECLINED: nothing was taken


# --- mutations (each one write unit) -------------------------------------------------


def charge(
    conn: apsw.Connection, order_id: str, epoch: int, amount_cents: int, customer_id: str = ""
) -> Answer:
    call = MutatingCall(order_id, "Charge", charge_request(amount_cents), epoch)
    return once(conn, call, lambda: _charge(conn, order_id, amount_cents, customer_id))


def charge_request(amount_cents: int) -> str:
    """A Charge's canonical request text. The repeat check compares the amount only: it is
    what a charge takes."""
    return f"amount_cents={amount_cents}"


def _charge(conn: apsw.Connection, order_id: str, amount_cents: int, customer_id: str) -> Answer:
    decision = decide_charge(payment(conn, order_id), amount_cents)
    if decision.state is not None:
        conn.execute(
            "INSERT INTO payments (order_id, state, amount_cents, customer_id, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, decision.state, amount_cents, customer_id, decision.answer.reason),
        )
    return decision.answer


def refund(conn: apsw.Connection, order_id: str, epoch: int) -> Answer:
    return once(conn, MutatingCall(order_id, "Refund", "", epoch), lambda: _refund(conn, order_id))


def _refund(conn: apsw.Connection, order_id: str) -> Answer:
    current = payment(conn, order_id)
    decision = decide_refund(current)
    if current.state is PaymentState.CHARGED:
        conn.execute(
            "UPDATE payments SET state = ? WHERE order_id = ?", (PaymentState.REFUNDED, order_id)
        )
    elif decision.state is not None:  # nothing charged yet: the tombstone
        conn.execute(
            "INSERT INTO payments (order_id, state, amount_cents, customer_id, reason)"
            " VALUES (?, ?, 0, '', '')",
            (order_id, decision.state),
        )
    return decision.answer


# --- queries -------------------------------------------------------------------------

_COLUMNS: Final = "order_id, state, amount_cents, customer_id, reason"


def payment(conn: apsw.Connection, order_id: str) -> Payment:
    """The order's payment; state NONE when the ledger has never heard of it."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM payments WHERE order_id = ?", (order_id,)
    ).fetchone()
    return Payment(order_id, PaymentState.NONE) if row is None else _payment(row)


def list_payments(conn: apsw.Connection, page: PageRequest) -> LedgerPage[Payment]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM payments WHERE order_id > ? ORDER BY order_id LIMIT ?",
        (page.after, page.limit + 1),
    )
    return LedgerPage.of([_payment(row) for row in rows], page.limit, lambda p: p.order_id)


def _payment(row: Any) -> Payment:  # an apsw row of _COLUMNS
    order_id, state, amount, customer, reason = row
    return Payment(str(order_id), PaymentState(state), int(amount), str(customer), str(reason))
