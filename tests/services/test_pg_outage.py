"""A service whose PostgreSQL is away: started with the database down, it still serves,
answers every call UNAVAILABLE with its stable code, and reports NOT_SERVING to grpc
health; when the database comes back it migrates, serves, and reports SERVING, by itself.
The same after a SIGKILL of the database under a running service. Nothing answered is
lost or applied twice; each outage is one WARNING line and one INFO line in its log. The
database is the test's own server (tests/support/pg_server.py), never the shared one."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from proto.payment.v1 import payment_pb2 as pay
from proto.payment.v1 import payment_pb2_grpc
from saga.probes import probe_grpc
from tests.services.helpers import epoch
from tests.support.pg_server import PgServer
from tests.support.procs import free_port, grpc_serving, start_service
from tests.support.stack import wait_for

pytestmark = pytest.mark.slow


def charge(stub: payment_pb2_grpc.PaymentStub, order_id: str) -> pay.ChargeResponse:
    request = pay.ChargeRequest(order_id=order_id, amount_cents=1234)
    return stub.Charge(request, metadata=epoch(1), timeout=20)


def error_code(err: grpc.RpcError) -> str | None:
    assert isinstance(err, grpc.Call)
    for key, value in err.trailing_metadata() or ():
        if key == "x-saga-error":
            return value if isinstance(value, str) else value.decode()
    return None


def refused_unavailable(stub: payment_pb2_grpc.PaymentStub, order_id: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        charge(stub, order_id)
    err = info.value
    assert isinstance(err, grpc.Call)
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
    assert error_code(err) == "storage_unavailable"
    assert "postgresql://" in (err.details() or "")


def test_a_service_waits_for_its_database_and_recovers_by_itself(tmp_path: Path) -> None:
    with PgServer.create(tmp_path) as pg:
        url = pg.create_database("ledgers").replace("postgres@", "postgres:s3cret@")
        pg.stop()
        svc = start_service(
            "payment", tmp_path / "data", free_port(), {"PAYMENT_DATABASE_URL": url}, wait=False
        )
        wait_for(lambda: "payment serving on" in svc.output(), what="the service never served")
        assert "s3cret" not in svc.output(), "the password never shows"
        assert (probe_grpc(svc.address, "") or "").endswith("NOT_SERVING")
        with grpc.insecure_channel(svc.address) as channel:
            stub = payment_pb2_grpc.PaymentStub(channel)
            refused_unavailable(stub, "before")

            pg.start()
            wait_for(lambda: grpc_serving(svc.address), what="never SERVING once back")
            assert charge(stub, "o1").success

            pg.kill()  # under a running service: its pooled connections die too
            wait_for(lambda: not grpc_serving(svc.address), what="never NOT_SERVING")
            refused_unavailable(stub, "o2")

            pg.start()
            wait_for(lambda: grpc_serving(svc.address), what="never SERVING again")
            assert charge(stub, "o1").success, "a repeat gets its first answer"
            assert charge(stub, "o2").success
            found = stub.ListPayments(pay.ListPaymentsRequest())
        assert svc.running, "the outage never ended the process"
        assert [(p.order_id, p.state, p.amount_cents) for p in found.payments] == [
            ("o1", pay.PAYMENT_STATE_CHARGED, 1234),
            ("o2", pay.PAYMENT_STATE_CHARGED, 1234),
        ], "nothing refused was applied, nothing answered twice"
        rows = pg.fetch("SELECT count(*) FROM payment_svc.journal", database="ledgers")
        assert rows == [(2,)]
        # Each outage is one WARNING when it starts and one INFO when it ends, however many
        # calls and health checks met it; never a traceback (engine/pg/outage.py).
        log = svc.output().splitlines()
        assert not [line for line in log if "Traceback" in line], svc.output()
        warnings = [line for line in log if "WARNING" in line]
        assert len(warnings) == 2, warnings
        assert all("ledger postgresql://postgres:***@" in line for line in warnings), warnings
        assert len([line for line in log if "INFO" in line and "available again" in line]) == 2
