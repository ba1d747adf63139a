"""The operator tools against a live system: the real services, real recovery daemons and
the engine's own runner share one saga log with `saga show/retry/cancel`. Every outcome
is read back from the log, the services' ledgers and the contract's audit."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus
from tests.ops.helpers import (
    ledgers,
    park_with_runner,
    record,
    run_saga,
    without_faults,
)
from tests.support.procs import kill_all
from tests.support.stack import ORDERS, Stack, order

pytestmark = pytest.mark.slow

CHARGE_FAILS = {"SAGA_FAULTS": "Charge:before:1"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path)
    yield s
    kill_all()


def crash_daemon_at(stack: Stack, point: str, saga_id: str) -> None:
    """A recovery daemon that SIGKILLs itself at `point`: it dies holding the saga."""
    daemon = stack.recovery({"SAGA_CRASH_AT": point}, name="doomed", wait=False)
    try:
        code = daemon.wait(60)
    except subprocess.TimeoutExpired:
        shown = run_saga("show", saga_id, env=stack.env).out
        pytest.fail(f"the daemon never reached {point}:\n{shown}\n{daemon.output()}")
    assert code == -9, daemon.output()


def states(stack: Stack, order_id: str) -> tuple[str, str, str]:
    """(order, reservation, payment) as the three services hold them now."""
    snap = ledgers(stack)
    order_status = next((o.status for o in snap.orders if o.id == order_id), "NONE")
    reservation = next((r.state for r in snap.reservations if r.order_id == order_id), "NONE")
    payment = next((p.state for p in snap.payments if p.order_id == order_id), "NONE")
    return order_status, reservation, payment


def test_show_a_finished_saga_and_list_by_outcome(stack: Stack) -> None:
    stack.start_services()
    stack.seed_sagas([(name, req) for name, req in ORDERS.items()], owner=None)
    stack.recovery()
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]

    ran = run_saga("show", "success", env=stack.env)
    assert ran.code == 0, ran
    assert "status    COMPLETED" in ran.out
    assert "next      nothing: it ended COMPLETED" in ran.out
    done = [line.split()[3] for line in ran.out.splitlines() if " done " in line]
    assert done == ["create_order", "reserve_stock", "charge_payment", "confirm_order"]

    doc = json.loads(run_saga("show", "declined", "--json", env=stack.env).out)
    rec, transitions = record(stack.log_path, "declined")
    assert (doc["status"], doc["reason"]) == ("COMPENSATED", "payment_declined")
    assert [(s["step"], s["phase"], s["attempt"], s["error"]) for s in doc["steps"]] == [
        (t.step, t.phase.value, t.attempt, t.error) for t in transitions
    ]
    assert doc["steps"][-1]["phase"] == "compensated"
    assert doc["epoch"] == rec.epoch

    ls = json.loads(run_saga("ls", "--json", "--status", "compensated", env=stack.env).out)
    assert sorted(r["id"] for r in ls["sagas"]) == ["declined", "out_of_stock"]
    assert {r["reason"] for r in ls["sagas"]} == {"payment_declined", "out_of_stock"}


def test_retry_a_parked_saga_and_the_daemon_finishes_it(stack: Stack) -> None:
    stack.start_services(CHARGE_FAILS)
    stack.seed_sagas([("o-1", order(5_000, quantity=2))], owner=None)
    park_with_runner(stack, ["o-1"])  # order created, stock reserved, the charge keeps failing
    assert states(stack, "o-1") == ("PENDING", "RESERVED", "NONE")

    shown = run_saga("show", "o-1", env=stack.env)
    assert "status    NEEDS_ATTENTION" in shown.out
    assert "reason    charge_payment: 2 attempts failed" in shown.out
    # past its pivot: retrying is the only way out, and show says so
    assert "next      nothing: parked, needs an operator (saga retry o-1)" in shown.out
    before = record(stack.log_path, "o-1")
    refused = run_saga("cancel", "o-1", env=stack.env)
    assert refused.code == 3, refused
    assert "cannot cancel o-1 (past_pivot)" in refused.err
    assert record(stack.log_path, "o-1") == before

    without_faults(stack, "payment")
    stack.recovery()
    ran = run_saga("retry", "o-1", "--wait", "30", env=stack.env)
    assert ran.code == 0, ran
    lines = ran.out.splitlines()
    assert lines[0].startswith("retried o-1: now RUNNING at epoch")
    assert "recovery daemon claims it" in lines[0]
    assert lines[-1] == "o-1 ended COMPLETED"

    report = stack.audit()
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 1}
    assert states(stack, "o-1") == ("CONFIRMED", "RESERVED", "CHARGED")
    _, transitions = record(stack.log_path, "o-1")
    assert [t.phase for t in transitions].count(Phase.RESUMED) == 1
    again = run_saga("retry", "o-1", env=stack.env)
    assert again.code == 3
    assert "not_parked" in again.err


def test_cancel_before_the_pivot_gives_everything_back(stack: Stack) -> None:
    stack.start_services()
    stack.seed_sagas([("o-1", order(5_000, quantity=3))], owner=None)
    # the daemon dies about to charge: the order exists and its stock is really reserved
    crash_daemon_at(stack, "before_intent:charge_payment", "o-1")
    assert states(stack, "o-1") == ("PENDING", "RESERVED", "NONE")

    ran = run_saga("cancel", "o-1", env=stack.env)
    assert ran.code == 0, ran
    assert ran.out.startswith("cancelled o-1: now COMPENSATING (cancelled_by_operator)")
    rec, _ = record(stack.log_path, "o-1")
    assert (rec.status, rec.reason, rec.owner) == (
        SagaStatus.COMPENSATING,
        "cancelled_by_operator",
        None,  # unowned: the next daemon claims it at once, the dead one's lease aside
    )

    stack.recovery()
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CANCELLED": 1}
    assert states(stack, "o-1") == ("CANCELLED", "RELEASED", "NONE")
    snap = ledgers(stack)
    assert [o.reason for o in snap.orders] == ["cancelled_by_operator"]
    assert record(stack.log_path, "o-1")[0].status is SagaStatus.COMPENSATED


def test_bulk_cancel_acts_on_the_ones_before_their_pivot(stack: Stack) -> None:
    stack.start_services()
    stack.seed_sagas([("paid", order(5_000))], owner=None)
    crash_daemon_at(stack, "after_intent:charge_payment", "paid")  # past its pivot
    stack.seed_sagas([("b-1", order(100)), ("b-2", order(200))], owner=None)
    untouched = [record(stack.log_path, sid) for sid in ("paid", "b-1", "b-2")]

    dry = run_saga(
        "cancel", "--status", "running", "--older-than", "1m", "--dry-run", env=stack.env
    )
    assert dry.code == 0, dry
    rows = {line.split()[0]: line for line in dry.out.splitlines()[1:-1]}
    assert sorted(rows) == ["b-1", "b-2", "paid"]
    assert rows["b-1"].endswith("cancel")
    assert "refuse (past_pivot)" in rows["paid"]
    assert dry.out.splitlines()[-1] == (
        "dry run: would cancel 2 of 3 sagas (1 would be refused); nothing changed"
    )
    no = run_saga("cancel", "--status", "RUNNING", env=stack.env, stdin="n\n")
    assert (no.code, no.out.strip()) == (1, "nothing changed")
    assert "cancel these 3 sagas? [y/N]" in no.err
    assert [record(stack.log_path, sid) for sid in ("paid", "b-1", "b-2")] == untouched

    ran = run_saga("cancel", "--status", "RUNNING", "--yes", env=stack.env)
    assert ran.code == 3, ran  # something was refused
    assert ran.out.splitlines()[0] == "cancelled 2, refused 1, failed 0"
    assert ran.out.splitlines()[1:3] == [
        "  refused 1, past_pivot (the saga is past its pivot: it can only go forward now):",
        "    paid",
    ]

    stack.recovery()
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 1, "CANCELLED": 2}
    for sid in ("b-1", "b-2"):
        # never started: nothing to give back, yet the Order service knows they were cancelled
        assert record(stack.log_path, sid)[0].reason == "cancelled_by_operator"
        assert states(stack, sid) == ("CANCELLED", "NONE", "NONE")
    assert states(stack, "paid") == ("CONFIRMED", "RESERVED", "CHARGED")


def test_bulk_retry_with_a_prompt_and_wait(stack: Stack) -> None:
    stack.start_services(CHARGE_FAILS)
    ids = ["p-1", "p-2", "p-3"]
    stack.seed_sagas([(sid, order(1_000)) for sid in ids], owner=None)
    park_with_runner(stack, ids)
    stack.seed_sagas([("r-1", order(1_000))], owner=None)  # running, not parked: left alone

    dry = run_saga("retry", "--status", "needs_attention", "--dry-run", env=stack.env)
    assert dry.code == 0, dry
    assert sorted(line.split()[0] for line in dry.out.splitlines()[1:-1]) == ids
    assert dry.out.splitlines()[-1].startswith("dry run: would retry 3 of 3 sagas")

    without_faults(stack, "payment")
    stack.recovery()
    # without --status a bulk retry picks the parked ones; "y" at the prompt
    ran = run_saga("retry", "--older-than", "1s", "--wait", "30", env=stack.env, stdin="y\n")
    assert ran.code == 0, ran
    lines = ran.out.splitlines()
    assert lines[0] == "retried 3, refused 0, failed 0"
    assert sorted(line for line in lines if " ended " in line) == [
        f"{sid} ended COMPLETED" for sid in ids
    ]
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 4}
