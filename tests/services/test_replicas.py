"""Two real `saga service inventory` processes (two ports) on one PostgreSQL ledger: every
rule holds across them. Many concurrent Reserve calls for the last units through both
grant exactly the available quantity; the same call through both replicas is applied
once; an epoch seen by one replica fences the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc
from tests.services.helpers import epoch, saga_error
from tests.support.procs import ServiceProcess, free_port, start_service

pytestmark = pytest.mark.slow

LAST_UNITS = 7  # prod_1's whole stock
CALLERS = 80  # orders that want one unit each, half through each replica


@dataclass
class Replicas:
    procs: tuple[ServiceProcess, ServiceProcess]
    stubs: tuple[inventory_pb2_grpc.InventoryAsyncStub, inventory_pb2_grpc.InventoryAsyncStub]


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[ServiceProcess, ...]]:
    env = {
        "INVENTORY_DATABASE_URL": pg_url,
        "INVENTORY_SEED_STOCK": f"prod_1={LAST_UNITS},prod_2=1000",
    }
    # Started together: the migration and the seed are serialized between them.
    procs = [
        start_service("inventory", tmp_path / f"r{i}", free_port(), env, wait=False)
        for i in range(2)
    ]
    for proc in procs:
        proc.wait_ready()
    yield tuple(procs)
    for proc in procs:
        proc.kill()


@pytest.fixture
async def replicas(two_replicas: tuple[ServiceProcess, ...]) -> AsyncIterator[Replicas]:
    a, b = two_replicas
    async with (
        grpc.aio.insecure_channel(a.address) as to_a,
        grpc.aio.insecure_channel(b.address) as to_b,
    ):
        yield Replicas(
            (a, b), (inventory_pb2_grpc.InventoryStub(to_a), inventory_pb2_grpc.InventoryStub(to_b))
        )


def reserve(order_id: str, product: str = "prod_1", quantity: int = 1) -> inv.ReserveRequest:
    return inv.ReserveRequest(
        order_id=order_id, items=[inv.StockItem(product_id=product, quantity=quantity)]
    )


async def stock_of(stub: inventory_pb2_grpc.InventoryAsyncStub) -> inv.GetStockResponse:
    return await stub.GetStock(inv.GetStockRequest())


async def test_the_last_units_are_granted_exactly_once_across_replicas(
    replicas: Replicas,
) -> None:
    calls = [
        replicas.stubs[i % 2].Reserve(reserve(f"order-{i:03d}"), metadata=epoch(1))
        for i in range(CALLERS)
    ]
    answers = await asyncio.gather(*calls)
    granted = [i for i, answer in enumerate(answers) if answer.success]
    assert len(granted) == LAST_UNITS, "exactly the available quantity is granted"
    assert {answer.reason for answer in answers if not answer.success} == {"out_of_stock"}
    for stub in replicas.stubs:  # both replicas read the one ledger
        view = await stock_of(stub)
        assert view.available["prod_1"] == 0
        assert view.reserved["prod_1"] == LAST_UNITS
        assert view.initial["prod_1"] == LAST_UNITS, "seeded once, not once per replica"
    states = [
        (
            await replicas.stubs[1 - i % 2].GetReservation(
                inv.GetReservationRequest(order_id=f"order-{i:03d}")
            )
        ).state
        for i in range(CALLERS)
    ]
    assert states.count(inv.RESERVATION_STATE_RESERVED) == LAST_UNITS
    assert states.count(inv.RESERVATION_STATE_REJECTED) == CALLERS - LAST_UNITS


async def test_the_same_call_through_both_replicas_is_applied_once(replicas: Replicas) -> None:
    orders = [f"dup-{i:02d}" for i in range(12)]
    copies = 6  # of each call, alternating between the replicas, all at once
    calls = [
        replicas.stubs[c % 2].Reserve(reserve(order_id, "prod_2", 3), metadata=epoch(1))
        for order_id in orders
        for c in range(copies)
    ]
    answers = await asyncio.gather(*calls)
    assert all(answer.success for answer in answers)
    view = await stock_of(replicas.stubs[0])
    assert view.available["prod_2"] == 1000 - 3 * len(orders), "each order reserved once"
    assert view.reserved["prod_2"] == 3 * len(orders)
    # The compensation too: released once through both, the stock comes back once.
    releases = [
        replicas.stubs[c % 2].Release(inv.ReleaseRequest(order_id=order_id), metadata=epoch(1))
        for order_id in orders
        for c in range(copies)
    ]
    assert all(answer.success for answer in await asyncio.gather(*releases))
    view = await stock_of(replicas.stubs[1])
    assert (view.available["prod_2"], view.reserved["prod_2"]) == (1000, 0)
    # And a late reserve through either replica meets the tombstone.
    late = await replicas.stubs[0].Reserve(reserve("tomb", "prod_2"), metadata=epoch(1))
    assert late.success
    await replicas.stubs[1].Release(inv.ReleaseRequest(order_id="never"), metadata=epoch(1))
    refused = await replicas.stubs[0].Reserve(reserve("never", "prod_2"), metadata=epoch(1))
    assert (refused.success, refused.reason) == (False, "already_released")


async def test_an_epoch_seen_by_one_replica_fences_the_other(replicas: Replicas) -> None:
    a, b = replicas.stubs
    assert (await a.Reserve(reserve("o1", "prod_2"), metadata=epoch(5))).success
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await b.Release(inv.ReleaseRequest(order_id="o1"), metadata=epoch(4))
    assert stale.value.code() is grpc.StatusCode.ABORTED
    assert saga_error(stale.value) == "stale_epoch"
    found = await a.GetReservation(inv.GetReservationRequest(order_id="o1"))
    assert found.state == inv.RESERVATION_STATE_RESERVED
    assert (await b.Release(inv.ReleaseRequest(order_id="o1"), metadata=epoch(6))).success
    with pytest.raises(grpc.aio.AioRpcError) as stale_again:
        await a.Reserve(reserve("o1", "prod_2"), metadata=epoch(5))
    assert stale_again.value.code() is grpc.StatusCode.ABORTED
