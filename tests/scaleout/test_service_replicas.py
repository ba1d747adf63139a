"""Several replicas of each service on several test hosts, over one PostgreSQL ledger
(issue 18): a host's replicas die under a load of orders and are not started again, and a
replica dies in the middle of a burst of mutating calls; the callers (a comma-separated
list of replicas) route around the dead ones, and the ledger stays exactly right.

The services' ledgers live in a PostgreSQL server of the test's own, on this machine's
address on the test network; the saga log stays the gateway's SQLite file here (the saga
log on PostgreSQL is tests/scaleout/test_gateway_hosts.py's business)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import grpc
import grpc.aio
import pytest

from proto.inventory.v1 import inventory_pb2_grpc
from proto.payment.v1 import payment_pb2_grpc
from tests.resilience.load import LoadResult, judge_run, run_load
from tests.services.test_kill import (
    SEED,
    Burst,
    assert_cut_off,
    burst,
    converge_inventory,
    converge_payments,
    inventory_calls,
    payment_calls,
)
from tests.support.netns import Host, Network
from tests.support.pg_server import PgServer
from tests.support.procs import ServiceProcess
from tests.support.prom import scrape
from tests.support.stack import PLENTY, Stack

pytestmark = pytest.mark.slow

LEDGER_URLS: Final = ("ORDER_DATABASE_URL", "PAYMENT_DATABASE_URL", "INVENTORY_DATABASE_URL")


def ledgers_env(pg: PgServer, network: Network) -> dict[str, str]:
    """The three services' ledgers in one fresh database, as the hosts reach it."""
    pg.create_database("ledgers")
    url = pg.url("ledgers", host=network.ip)
    return dict.fromkeys(LEDGER_URLS, url)


@pytest.fixture
def hosts(network: Network) -> tuple[Host, Host]:
    return network.add_host("replicas-a"), network.add_host("replicas-b")


@pytest.fixture
def stack(
    tmp_path: Path, network: Network, pg: PgServer, hosts: tuple[Host, Host]
) -> Iterator[Stack]:
    s = Stack.on_hosts(
        tmp_path, hosts, SAGA_LEASE_S="1", INVENTORY_SEED_STOCK=PLENTY, **ledgers_env(pg, network)
    )
    yield s
    s.close()


def rpcs(replica: ServiceProcess) -> float:
    """Mutating calls this replica has answered so far (its own metrics endpoint)."""
    url = f"http://{replica.env[f'{replica.service.upper()}_METRICS_ADDR']}/metrics"
    return scrape(url).value("saga_service_rpc_total", service=replica.service)


def test_a_hosts_replicas_die_under_load_and_the_others_carry_on(
    stack: Stack, hosts: tuple[Host, Host]
) -> None:
    doomed, survivor = hosts
    stack.start_services()
    stack.recovery()
    stack.start_gateway()
    on = {h.label: [r for r in stack.replicas if r.on is h] for h in hosts}
    assert all(len(on[h.label]) == 3 for h in hosts), on  # a replica of each, on each host
    before: dict[str, float] = {}
    orders = 150

    def kill_a_host(done: threading.Event, result: LoadResult) -> None:
        while len(result.accepted) < orders // 3 and not done.wait(0.005):
            pass
        for replica in on[doomed.label]:
            before[replica.service] = rpcs(replica)
        doomed.kill_all()  # every replica on it, at once; nobody starts them again
        result.kills += 1

    result = run_load(stack, orders, during=kill_a_host)
    verdict = judge_run(stack, settle_s=90)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders and verdict.counts["orders"] == orders
    assert result.kills == 1
    assert not any(r.running for r in on[doomed.label]), "the dead host stayed dead"
    # Calls were spread over both hosts before the kill, and the survivors took the rest.
    assert all(n > 0 for n in before.values()), before
    assert all(rpcs(r) > 0 for r in on[survivor.label])


def replica_list(replicas: list[ServiceProcess]) -> str:
    """grpc's own static list of addresses, spread over with round_robin."""
    return "ipv4:" + ",".join(r.address for r in replicas)


ROUND_ROBIN: Final = (("grpc.lb_policy_name", "round_robin"),)


@pytest.mark.parametrize("service", ["inventory", "payment"])
async def test_a_replica_dies_mid_burst_and_the_ledger_stays_exact(
    stack: Stack, hosts: tuple[Host, Host], service: str
) -> None:
    seed = ",".join(f"{product}={quantity}" for product, quantity in SEED.items())
    replicas = [
        stack.start_replica(service, host, 50051, {"INVENTORY_SEED_STOCK": seed}, wait=False)
        for host in hosts
    ]
    for replica in replicas:
        replica.wait_ready()
    doomed, survivor = replicas
    # Calls spread over both hosts' replicas; the first is SIGKILLed after KILL_AFTER
    # answers, and the channel routes around it for the rest of the burst.
    async with grpc.aio.insecure_channel(replica_list(replicas), options=ROUND_ROBIN) as both:
        if service == "inventory":
            calls = inventory_calls(inventory_pb2_grpc.InventoryStub(both))
        else:
            calls = payment_calls(payment_pb2_grpc.PaymentStub(both))
        first: Burst = await burst(calls, kill=doomed.kill)
    assert_cut_off(doomed, first)
    issued = {key for key, _ in calls}
    # The ledger, read through the replica that lived: every answered call once, every
    # unanswered one whole or absent; sending everything again gets the first answers.
    if service == "inventory":
        await converge_inventory(survivor, issued, first)
    else:
        await converge_payments(survivor, issued, first)
