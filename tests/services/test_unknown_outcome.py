"""A ledger write whose COMMIT outcome is unknown (the WAL's fsync failed) is never
answered as a refusal: UNKNOWN with `outcome_unknown` from the library, a dropped call and
exit code 74 from a serving process; the caller's repeat after a restart is applied once.

The storage fails through tests/support/faultvfs.py: in this process, or in the child
through its start-up hook."""

from __future__ import annotations

from pathlib import Path

import apsw
import grpc
import grpc.aio
import pytest

from engine.errors import CommitOutcomeUnknown, TransientStepError
from orders.participants import Participants, ServiceAddresses
from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from services.common.backend import SqliteBacked
from tests.services.helpers import epoch, saga_error, serving, settings_for
from tests.support.faultvfs import Fault, faulty_env, installed
from tests.support.procs import free_port, start_service

FSYNC_FAILS = apsw.SQLITE_IOERR_FSYNC


def reserve(order_id: str, quantity: int = 1) -> inv.ReserveRequest:
    return inv.ReserveRequest(
        order_id=order_id, items=[inv.StockItem(product_id="prod_1", quantity=quantity)]
    )


async def test_the_library_answers_unknown_then_refuses_every_write(tmp_path: Path) -> None:
    with installed() as vfs:
        async with serving(settings_for("inventory", tmp_path)) as (running, channel):
            stub = inventory_pb2_grpc.InventoryStub(channel)
            assert (await stub.Reserve(reserve("o1"), metadata=epoch(1))).success
            vfs.arm(Fault("inventory.db-wal", "sync", 1, FSYNC_FAILS))
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.Reserve(reserve("o2"), metadata=epoch(1))
            assert unknown.value.code() is grpc.StatusCode.UNKNOWN
            assert saga_error(unknown.value) == "outcome_unknown"
            vfs.disarm()
            with pytest.raises(grpc.aio.AioRpcError) as still:  # poisoned: no more writes
                await stub.Release(inv.ReleaseRequest(order_id="o1"), metadata=epoch(1))
            assert saga_error(still.value) == "outcome_unknown"
            assert isinstance(running.ledger, SqliteBacked)
            assert running.ledger.store.writer.poisoned is not None
            read = await stub.GetReservation(inv.GetReservationRequest(order_id="o1"))
            assert read.state == inv.RESERVATION_STATE_RESERVED  # reads still answer
            # What the saga makes of it: transient, so the step is retried as it is.
            client = Participants(ServiceAddresses(*[("127.0.0.1", running.port)] * 3))
            try:
                with pytest.raises(TransientStepError):
                    await client.reserve("o3", [inv.StockItem(product_id="prod_1", quantity=1)], 1)
            finally:
                await client.close()


@pytest.mark.slow
def test_a_serving_process_drops_the_call_exits_74_and_a_repeat_applies_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    arm = tmp_path / "arm"  # the fault counts once this exists: not during start-up
    fault = Fault("inventory.db-wal", "sync", 1, FSYNC_FAILS, when=str(arm))
    svc = start_service("inventory", data, free_port(), faulty_env(fault))
    with svc, grpc.insecure_channel(svc.address) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        assert stub.Reserve(reserve("o1", 2), metadata=epoch(1), timeout=10).success
        arm.touch()
        with pytest.raises(grpc.RpcError) as dropped:
            stub.Reserve(reserve("o2", 3), metadata=epoch(1), timeout=10)
        assert isinstance(dropped.value, grpc.Call)
        assert dropped.value.code() is grpc.StatusCode.UNAVAILABLE  # no answer, no refusal
        assert svc.wait(10) == CommitOutcomeUnknown.exit_code
        assert "whether it is durable is unknown" in svc.output()
        arm.unlink()
        svc.start()  # as `saga up` would; the fault stays unarmed
        again = stub.Reserve(reserve("o2", 3), metadata=epoch(1), timeout=10)
        assert again.success
        assert stub.Reserve(reserve("o2", 3), metadata=epoch(1), timeout=10).success
        held = stub.GetReservation(inv.GetReservationRequest(order_id="o2"), timeout=10)
        assert [(i.product_id, i.quantity) for i in held.items] == [("prod_1", 3)]
        stock = stub.GetStock(inv.GetStockRequest(product_ids=["prod_1"]), timeout=10)
        # Applied once: 2 (o1) + 3 (o2) out of the 15 seeded.
        assert stock.available["prod_1"] == 15 - 2 - 3
        assert stock.initial["prod_1"] == stock.available["prod_1"] + stock.reserved["prod_1"]
