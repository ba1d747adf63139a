"""The audit's pure checks: a consistent snapshot passes; each kind of break is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.core import SagaStatus
from orders.audit import (
    OrderRow,
    PaymentRow,
    ReservationRow,
    SagaRow,
    Snapshot,
    audit,
)

OK = Snapshot(
    sagas=[
        SagaRow("a", SagaStatus.COMPLETED, None, "k1", (("p1", 2),), 10_000),
        SagaRow("b", SagaStatus.COMPENSATED, "payment_declined", "k2", (("p1", 1),), 60_000),
        SagaRow("c", SagaStatus.COMPENSATED, "out_of_stock", None, (("p3", 1),), 100),
    ],
    orders=[
        OrderRow("a", "CONFIRMED", "", 10_000),
        OrderRow("b", "CANCELLED", "payment_declined", 60_000),
        OrderRow("c", "CANCELLED", "out_of_stock", 100),
    ],
    reservations=[
        ReservationRow("a", "RESERVED", (("p1", 2),)),
        ReservationRow("b", "RELEASED", (("p1", 1),)),
        ReservationRow("c", "REJECTED", ()),
    ],
    payments=[PaymentRow("a", "CHARGED", 10_000), PaymentRow("b", "DECLINED", 60_000)],
    initial_stock={"p1": 15, "p3": 0},
    available_stock={"p1": 13, "p3": 0},
)


def test_a_consistent_system_passes() -> None:
    report = audit(OK)
    assert report.ok, report.violations
    assert report.orders == 3
    assert report.by_status == {"CONFIRMED": 1, "CANCELLED": 2}


@pytest.mark.parametrize(
    ("snapshot", "invariant", "needle"),
    [
        (
            replace(OK, sagas=[replace(OK.sagas[0], status=SagaStatus.RUNNING), *OK.sagas[1:]]),
            1,
            "not finished",
        ),
        (
            replace(OK, orders=[replace(OK.orders[0], status="PENDING"), *OK.orders[1:]]),
            1,
            "Order service says PENDING",
        ),
        (replace(OK, orders=OK.orders[1:]), 1, "no such order"),
        (
            replace(OK, orders=[*OK.orders[:2], replace(OK.orders[2], reason="x")]),
            1,
            "cancel reason differs",
        ),
        (
            replace(
                OK,
                reservations=[
                    replace(OK.reservations[0], items=(("p1", 1),)),
                    *OK.reservations[1:],
                ],
                available_stock={"p1": 14, "p3": 0},
            ),
            2,
            "reserved",
        ),
        (
            replace(OK, payments=[PaymentRow("a", "CHARGED", 9_999), OK.payments[1]]),
            2,
            "charged 9999 cents",
        ),
        (
            replace(
                OK,
                reservations=[
                    OK.reservations[0],
                    replace(OK.reservations[1], state="RESERVED"),
                    OK.reservations[2],
                ],
                available_stock={"p1": 12, "p3": 0},
            ),
            3,
            "cancelled but its reservation is RESERVED",
        ),
        (
            replace(OK, payments=[OK.payments[0], PaymentRow("b", "CHARGED", 60_000)]),
            3,
            "cancelled but its payment is CHARGED",
        ),
        (replace(OK, available_stock={"p1": 14, "p3": 0}), 4, "initial 15 != available 14"),
        (
            replace(OK, available_stock={"p1": 13, "p3": -1}, initial_stock={"p1": 15, "p3": -1}),
            4,
            "available is -1",
        ),
        (
            replace(OK, payments=[*OK.payments, PaymentRow("zzz", "CHARGED", 5)]),
            6,
            "charged for an order the log lacks",
        ),
        (
            replace(
                OK,
                sagas=[*OK.sagas, replace(OK.sagas[2], id="d", idempotency_key="k1")],
                orders=[*OK.orders, replace(OK.orders[2], id="d")],
            ),
            6,
            "2 orders for one key",
        ),
    ],
)
def test_each_break_is_reported(snapshot: Snapshot, invariant: int, needle: str) -> None:
    report = audit(snapshot)
    assert not report.ok
    assert any(v.invariant == invariant and needle in str(v) for v in report.violations), [
        str(v) for v in report.violations
    ]


def test_money_conservation_is_checked_overall() -> None:
    snap = replace(
        OK,
        payments=[
            PaymentRow("a", "CHARGED", 10_000),
            PaymentRow("b", "DECLINED", 60_000),
            PaymentRow("a", "CHARGED", 10_000),
        ],
    )
    messages = [str(v) for v in audit(snap).violations]
    assert any("more than one payment" in m for m in messages)
    assert any(m.startswith("[5] money") for m in messages)
