"""The network tests' judge (tests/support/history.py) on histories made by hand: a clean
one passes, and each broken promise is named."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from engine.core import SagaStatus
from orders.audit import OrderRow, PaymentRow, ReservationRow, SagaRow, Snapshot
from tests.support.history import History, Op, OpType, Outcome, Recorder, judge

BODY = {"customer_id": "c", "items": [{"product_id": "prod_1", "quantity": 2, "price": 5.0}]}


def saga(order_id: str, key: str, status: SagaStatus = SagaStatus.COMPLETED) -> SagaRow:
    return SagaRow(order_id, status, None, key, (("prod_1", 2),), 1000)


def confirmed(*sagas: SagaRow, charges: int = 1) -> Snapshot:
    """Each saga confirmed everywhere: ordered, reserved, charged (`charges` times)."""
    return Snapshot(
        sagas=sagas,
        orders=[OrderRow(s.id, "CONFIRMED", "", 1000) for s in sagas],
        reservations=[ReservationRow(s.id, "RESERVED", (("prod_1", 2),)) for s in sagas],
        payments=[PaymentRow(s.id, "CHARGED", 1000) for s in sagas for _ in range(charges)],
        initial_stock={"prod_1": 100},
        available_stock={"prod_1": 100 - 2 * len(sagas)},
    )


def calls(*steps: tuple[str, OpType, str | None]) -> History:
    """One call per (key, outcome, order id); ok carries a 201, fail a 503."""
    ops: list[Op] = []
    for n, (key, kind, order_id) in enumerate(steps, 1):
        ops.append(Op(n, OpType.INVOKE, "client", key, float(n), BODY, 5.0))
        status = {OpType.OK: 201, OpType.FAIL: 503}.get(kind)
        ops.append(Op(n, kind, "client", key, n + 0.5, status=status, order_id=order_id))
    return History(tuple(ops))


def verdict_of(history: History, snap: Snapshot, **gateway: str) -> list[str]:
    answers = {s.id: "CONFIRMED" for s in snap.sagas} | gateway
    return list(judge(history, Outcome(snap, answers)).violations)


def test_a_clean_history_with_retries_passes() -> None:
    history = calls(("k1", OpType.UNKNOWN, None), ("k1", OpType.OK, "A"), ("k2", OpType.OK, "B"))
    snap = confirmed(saga("A", "k1"), saga("B", "k2"))
    assert verdict_of(history, snap) == []
    counts = judge(history, Outcome(snap, {"A": "CONFIRMED", "B": "CONFIRMED"})).counts
    assert (counts["HTTP 201"], counts["unknown"], counts["keys"]) == (2, 1, 2)


def test_one_key_answered_with_two_orders() -> None:
    history = calls(("k1", OpType.OK, "A"), ("k1", OpType.OK, "B"))
    found = verdict_of(history, confirmed(saga("A", "k1"), saga("B", "k1")))
    assert any("answered with 2 order ids" in v for v in found)
    assert any("2 orders in the log" in v for v in found)


def test_a_key_the_log_lost() -> None:
    history = calls(("k1", OpType.OK, "A"))
    found = verdict_of(history, confirmed(saga("A", "other")))
    assert any("key k1: acknowledged as ['A'], the log has no order for it" in v for v in found)


def test_an_unknown_outcome_that_created_an_order_must_end() -> None:
    history = calls(("k1", OpType.UNKNOWN, None))
    snap = confirmed(saga("A", "k1", SagaStatus.NEEDS_ATTENTION))
    found = verdict_of(history, snap, A="PENDING")
    assert any("never ended" in v for v in found)
    assert any("never acknowledged" in v for v in found)
    assert any(v.startswith("audit [1]") for v in found)


def test_a_double_charge_is_the_audits_to_find() -> None:
    history = calls(("k1", OpType.OK, "A"))
    found = verdict_of(history, confirmed(saga("A", "k1"), charges=2))
    assert any("more than one payment" in v for v in found)


def test_definite_failures_create_nothing() -> None:
    history = calls(("k1", OpType.FAIL, None), ("k1", OpType.FAIL, None))
    found = verdict_of(history, confirmed(saga("A", "k1")))
    assert any("every call failed definitely" in v for v in found)


def test_a_hung_call_a_late_call_and_a_500_are_named() -> None:
    ops = list(calls(("k1", OpType.OK, "A")).ops)
    ops.append(Op(7, OpType.INVOKE, "slow", "k2", 1.0, BODY, 2.0))
    ops.append(Op(7, OpType.UNKNOWN, "slow", "k2", 9.0, error="ReadTimeout"))
    ops.append(Op(8, OpType.INVOKE, "stuck", "k3", 1.0, BODY, 2.0))
    ops.append(Op(9, OpType.INVOKE, "bug", "k4", 1.0, BODY, 2.0))
    ops.append(Op(9, OpType.UNKNOWN, "bug", "k4", 1.5, status=500, error="internal"))
    found = verdict_of(History(tuple(ops)), confirmed(saga("A", "k1")))
    assert any("past its 2.0s deadline" in v for v in found)
    assert any("call 8 (stuck, key k3): never completed" in v for v in found)
    assert any("answered HTTP 500 internal" in v for v in found)


def test_the_wrong_body_and_orders_nobody_asked_for() -> None:
    history = calls(("k1", OpType.OK, "A"))
    wrong = dataclasses.replace(saga("A", "k1"), total_cents=999)
    found = verdict_of(history, confirmed(wrong, saga("X", "other")))
    assert any("the client asked" in v for v in found)
    assert any("order X: in the log, but no client asked for it" in v for v in found)


def test_the_gateway_must_agree_with_the_log() -> None:
    history = calls(("k1", OpType.OK, "A"))
    found = verdict_of(history, confirmed(saga("A", "k1")), A="CANCELLED")
    assert any("the gateway says CANCELLED" in v for v in found)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda r: httpx.Response(201, json={"id": "A"}, headers={"Idempotent-Replayed": "true"}),
         (OpType.OK, 201, "A", None)),
        (lambda r: httpx.Response(503, json={"error": "unavailable"}),
         (OpType.FAIL, 503, None, "unavailable")),
        (lambda r: httpx.Response(500, json={"error": "internal"}),
         (OpType.UNKNOWN, 500, None, "internal")),
    ],
)  # fmt: skip
def test_the_recorder_classifies_answers(
    tmp_path: Path,
    answer: Callable[[httpx.Request], httpx.Response],
    expected: tuple[OpType, int, str | None, str | None],
) -> None:
    recorder = Recorder(tmp_path / "h.jsonl")
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://gw") as http:
        recorder.post(http, "c", "k1", BODY)
    recorder.close()
    invoke, done = History.read(recorder.path).ops
    assert invoke.type is OpType.INVOKE
    assert invoke.body == BODY
    assert invoke.deadline_s == 20.0  # httpx's default 5 s, four phases
    assert (done.type, done.status, done.order_id, done.error) == expected
    assert done.replayed is (expected[0] is OpType.OK)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(httpx.ConnectError("refused"), OpType.FAIL), (httpx.ReadTimeout("slow"), OpType.UNKNOWN),
     (httpx.RemoteProtocolError("reset"), OpType.UNKNOWN)],
)  # fmt: skip
def test_the_recorder_tells_never_sent_from_unknown(
    tmp_path: Path, error: httpx.TransportError, expected: OpType
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    recorder = Recorder(tmp_path / "h.jsonl")
    with httpx.Client(transport=httpx.MockTransport(fail), base_url="http://gw") as http:
        assert recorder.post(http, "c", "k1", BODY) is None
    recorder.close()
    call = History.read(recorder.path).calls()[0]
    assert call.done is not None
    assert call.done.type is expected
    assert call.done.error is not None
