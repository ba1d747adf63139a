"""A participant whose disk fills: the Payment service's ledger on a small tmpfs that is
filled under a load of orders, then given room again. Its calls are refused UNAVAILABLE
while the disk is full (the saga's charge is retried, never half-applied), and once there
is room the same process carries on: every order ends, once, and the clients' history and
the audit say so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import SagaStatus
from tests.gateway.test_storage_failures import fill, tiny_disk
from tests.resilience.load import judge_run, run_load
from tests.support.procs import SERVICE_ADDR_VARS, start_service
from tests.support.stack import PLENTY, Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, SAGA_LEASE_S="2", INVENTORY_SEED_STOCK=PLENTY)
    yield s
    s.close()


def test_a_service_whose_disk_fills_refuses_then_carries_on(stack: Stack, tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk", "16m") as disk:
        for name in ("order", "inventory"):
            port = int(stack.env[SERVICE_ADDR_VARS[name]].rsplit(":", 1)[1])
            stack.services[name] = start_service(name, stack.data, port, stack.env)
        port = int(stack.env[SERVICE_ADDR_VARS["payment"]].rsplit(":", 1)[1])
        payment = start_service(
            "payment",
            disk,
            port,
            {**stack.env, "SAGA_DATA_DIR": str(disk)},
            log_path=stack.data / "payment.log",
        )
        stack.services["payment"] = payment
        stack.start_gateway()
        stack.recovery()

        filler = fill(disk)
        result = run_load(stack, 60)  # accepted: a 201 needs the saga log, not the services
        time.sleep(2.0)  # charges are refused meanwhile, and retried
        with stack.log() as log:
            waiting = [
                oid
                for oid in result.accepted.values()
                if (rec := log.get_sync(oid)) is not None and not rec.status.finished
            ]
        assert waiting, "the full disk held no charge back: the test tested nothing"
        assert "Charge: the ledger is unavailable" in payment.output(), "refused as UNAVAILABLE"

        filler.unlink()  # room again, and nobody restarts anything
        verdict = judge_run(stack, settle_s=90)
        assert verdict.ok, verdict.report()
        assert payment.running, f"the payment service stopped:\n{payment.output()[-2000:]}"
        with stack.log() as log:
            ended = [log.get_sync(oid) for oid in result.accepted.values()]
        assert all(r is not None and r.status is not SagaStatus.NEEDS_ATTENTION for r in ended)
        out = payment.output()
        assert "Traceback" not in out, out[-3000:]
