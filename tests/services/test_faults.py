"""Fault injection: the after-commit case a retry must survive, and that it stays off
unless SAGA_ENV=test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from engine.config import SettingsError
from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from proto.payment.v1 import payment_pb2 as pay
from proto.payment.v1 import payment_pb2_grpc
from services.common.faults import FaultKind, FaultPlan, FaultRule, parse_faults
from services.settings import ServiceSettings, fault_plan
from tests.services.helpers import saga_error, serving, settings_for

if TYPE_CHECKING:
    PaymentStub = payment_pb2_grpc.PaymentAsyncStub

TEST_MODE = FaultPlan(test_mode=True)
METHODS = {"Charge", "Refund", "Reserve", "GetStock"}


def fault(kind: str) -> tuple[tuple[str, str], ...]:
    return (("x-test-fault", kind),)


async def test_after_commit_fails_the_call_but_the_retry_gets_the_first_answer(
    tmp_path: Path,
) -> None:
    async with serving(settings_for("payment", tmp_path, faults=TEST_MODE)) as (_, channel):
        stub: PaymentStub = payment_pb2_grpc.PaymentStub(channel)
        request = pay.ChargeRequest(order_id="o1", amount_cents=700)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Charge(request, metadata=fault("after_commit"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert saga_error(info.value) == "injected_fault"
        found = await stub.GetPayment(pay.GetPaymentRequest(order_id="o1"))
        assert (found.state, found.amount_cents) == (pay.PAYMENT_STATE_CHARGED, 700)
        retry = await stub.Charge(request)
        assert (retry.success, retry.reason) == (True, "")
        listed = await stub.ListPayments(pay.ListPaymentsRequest())
        assert [(p.order_id, p.amount_cents) for p in listed.payments] == [("o1", 700)]


async def test_before_fails_the_call_with_no_effect(tmp_path: Path) -> None:
    async with serving(settings_for("payment", tmp_path, faults=TEST_MODE)) as (_, channel):
        stub: PaymentStub = payment_pb2_grpc.PaymentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Refund(pay.RefundRequest(order_id="o1"), metadata=fault("before"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        found = await stub.GetPayment(pay.GetPaymentRequest(order_id="o1"))
        assert found.state == pay.PAYMENT_STATE_NONE
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Refund(pay.RefundRequest(order_id="o1"), metadata=fault("sometimes"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_planned_after_commit_fault_never_applies_a_reservation_twice(
    tmp_path: Path,
) -> None:
    plan = parse_faults("Reserve:after_commit:1,*:latency_ms:1,seed:3", METHODS)
    async with serving(settings_for("inventory", tmp_path, faults=plan)) as (_, channel):
        stub = inventory_pb2_grpc.InventoryStub(channel)
        request = inv.ReserveRequest(
            order_id="o1", items=[inv.StockItem(product_id="prod_1", quantity=4)]
        )
        for _ in range(3):  # every attempt "fails", every attempt after the first is a repeat
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Reserve(request)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        stock = await stub.GetStock(inv.GetStockRequest(product_ids=["prod_1"]))
        assert (stock.available["prod_1"], stock.reserved["prod_1"]) == (11, 4)


async def test_the_test_fault_metadata_is_ignored_outside_test_mode(tmp_path: Path) -> None:
    async with serving(settings_for("payment", tmp_path)) as (_, channel):
        stub: PaymentStub = payment_pb2_grpc.PaymentStub(channel)
        reply = await stub.Charge(
            pay.ChargeRequest(order_id="o1", amount_cents=5), metadata=fault("before")
        )
        assert reply.success


def test_faults_need_saga_env_test() -> None:
    with pytest.raises(SettingsError, match="SAGA_ENV is not 'test'"):
        fault_plan({"SAGA_FAULTS": "Charge:before:1"})
    with pytest.raises(SettingsError, match="SAGA_ENV is not 'test'"):
        ServiceSettings.from_env("payment", {"SAGA_FAULTS": "x", "SAGA_ENV": "production"})
    assert not fault_plan({}).active
    assert not fault_plan({"SAGA_ENV": "prod"}).active
    assert fault_plan({"SAGA_ENV": "test"}) == FaultPlan(test_mode=True)


def test_the_faults_format() -> None:
    plan = parse_faults(
        "Charge:after_commit:0.3, Reserve:before:0.1,*:latency_ms:5,seed:7", METHODS
    )
    assert plan.rules == (
        FaultRule("Charge", FaultKind.AFTER_COMMIT, 0.3),
        FaultRule("Reserve", FaultKind.BEFORE, 0.1),
        FaultRule("*", FaultKind.LATENCY_MS, 5),
    )
    assert plan.seed == 7
    assert plan.value("Refund", FaultKind.LATENCY_MS, mutating=True) == 5
    assert plan.value("GetStock", FaultKind.LATENCY_MS, mutating=False) == 0, "* = mutating"
    assert plan.value("Charge", FaultKind.BEFORE, mutating=True) == 0
    override = parse_faults("*:before:0.5,Charge:before:0", METHODS)
    assert override.value("Charge", FaultKind.BEFORE, mutating=True) == 0
    assert override.value("Refund", FaultKind.BEFORE, mutating=True) == 0.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("Chrage:before:0.1", "unknown method 'Chrage'"),
        ("Charge:sometimes:0.1", "kind must be one of"),
        ("Charge:before:2", "between 0 and 1"),
        ("Charge:before:x", "between 0 and 1"),
        ("Charge:latency_ms:-1", "latency"),
        ("Charge:before", "METHOD:KIND:VALUE"),
        ("seed:abc", "seed"),
    ],
)
def test_a_malformed_faults_setting_is_a_clear_error(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_faults(raw, METHODS)
