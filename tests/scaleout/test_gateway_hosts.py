"""Gateways and a recovery daemon on several test hosts, sharing one saga log on a
PostgreSQL server of the test's own (issue 14), under a load of orders whose clients send
a POST that got no answer again, with its key, to the other gateway:

- every process of one gateway host is SIGKILLed: the others finish its sagas;
- a gateway host is cut off from PostgreSQL for longer than its lease: the daemon claims
  its sagas, and once the partition heals the old gateway writes nothing and the
  participants refuse its calls (its epoch is stale);
- PostgreSQL itself is SIGKILLed and started again: no 5xx but 503, and every process
  carries on by itself.

The judge is the clients' history against the final state (tests/support/history.py):
every acknowledged order ends, one key one order, each effect once, the audit is clean.
The services run on a host of their own, each on its SQLite ledger (their replicas on
PostgreSQL are tests/scaleout/test_service_replicas.py's business).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from engine.core import ACTIVE_STATUSES, Transition
from engine.saga_log import SagaFilter, SagaRecord
from engine.sync_log import SyncSagaLog
from tests.resilience.load import LoadResult, judge_run, run_load
from tests.support.netns import Host, Network
from tests.support.pg_server import PgServer
from tests.support.prom import scrape
from tests.support.stack import PLENTY, GatewayProcess, Stack

pytestmark = pytest.mark.slow

LEASE_S: Final = "1"
# Every mutating call 400 ms late: each saga is in flight for a second or two.
SLOW_CALLS: Final = {"SAGA_FAULTS": "*:latency_ms:400"}
STUCK: Final = 4  # sagas of the gateway caught in flight by its partition


@dataclass
class Hosts:
    net: Network
    gw_a: Host
    gw_b: Host
    daemon: Host
    services: Host


@pytest.fixture
def hosts(network: Network) -> Hosts:
    return Hosts(
        network,
        *(network.add_host(label) for label in ("gateway-a", "gateway-b", "daemon", "services")),
    )


@pytest.fixture
def stack(tmp_path: Path, hosts: Hosts, pg: PgServer) -> Iterator[Stack]:
    pg.create_database("saga")
    s = Stack.on_hosts(
        tmp_path,
        (hosts.services,),
        SAGA_DATABASE_URL=pg.url("saga", host=hosts.net.ip),
        SAGA_LEASE_S=LEASE_S,
        INVENTORY_SEED_STOCK=PLENTY,
    )
    yield s
    s.close()


def start(
    stack: Stack, hosts: Hosts, services_env: Mapping[str, str] | None = None, **gateway_a_env: str
) -> tuple[GatewayProcess, GatewayProcess]:
    stack.start_services(services_env)
    a = stack.start_gateway(on=hosts.gw_a, env=gateway_a_env)
    b = stack.start_gateway(on=hosts.gw_b)
    stack.recovery(on=hosts.daemon, extra_env={"SAGA_LEASE_S": LEASE_S})
    return a, b


def sagas(log: SyncSagaLog) -> list[SagaRecord]:
    out: list[SagaRecord] = []
    cursor: str | None = None
    while True:
        page = log.list_sagas_sync(SagaFilter(), limit=1000, cursor=cursor)
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            return out


def active_on(log: SyncSagaLog, proc: GatewayProcess) -> list[str]:
    """The sagas this gateway is driving now, by the log."""
    return [s.id for s in sagas(log) if s.status in ACTIVE_STATUSES and owned_by(proc, s)]


def owned_by(proc: GatewayProcess, record: SagaRecord) -> bool:
    """The owner id names the process (engine.runner.new_owner_id: role@host:pid:nonce)."""
    return record.owner is not None and f":{proc.pid}:" in record.owner


def test_a_gateway_host_dies_and_the_others_finish_its_sagas(stack: Stack, hosts: Hosts) -> None:
    # Calls take a while, so that the gateway always has sagas in flight to lose.
    a, b = start(stack, hosts, SLOW_CALLS)
    orders = 160
    in_flight: list[str] = []  # the gateway's unfinished sagas just before the kill

    def kill_host_a(done: threading.Event, result: LoadResult) -> None:
        while len(result.accepted) < orders // 3 and not done.wait(0.005):
            pass
        with stack.shared_log() as log:
            in_flight.extend(active_on(log, a))
            hosts.gw_a.kill_all()  # the gateway and anything else on that host, at once
            result.kills += 1

    result = run_load(stack, orders, urls=[a.url, b.url], during=kill_host_a)
    verdict = judge_run(stack, settle_s=60, url=b.url)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders and verdict.counts["orders"] == orders
    assert not a.running and b.running
    with stack.shared_log() as log:
        records = [log.get_sync(saga_id) for saga_id in in_flight]
    assert all(r is not None and r.status.finished for r in records)
    # Those it had not finished in the moment between the listing and the kill: cut short,
    # and finished by the others.
    cut_short = [r for r in records if r is not None and not owned_by(a, r)]
    assert cut_short, f"the kill caught none of its {len(in_flight)} sagas in flight"
    print(f"{len(cut_short)} of the dead gateway's sagas finished by the others")


def rpc_code_count(stack: Stack, code: str) -> float:
    """Calls the services answered with `code`, over every replica's metrics."""
    total = 0.0
    for svc in stack.replicas:
        url = f"http://{svc.env[f'{svc.service.upper()}_METRICS_ADDR']}/metrics"
        total += scrape(url).value("saga_service_rpc_total", code=code)
    return total


def test_a_partitioned_gateway_is_fenced_when_it_comes_back(
    stack: Stack, hosts: Hosts, pg: PgServer
) -> None:
    # Its calls may wait out the partition in the network: they must still be alive to be
    # delivered after it, and then be refused.
    a, b = start(stack, hosts, SAGA_STEP_TIMEOUT_S="60")
    orders = 80
    claimed: list[str] = []
    before: dict[str, list[Transition]] = {}
    timeline: dict[str, float] = {}  # seconds since the partition began, for the report

    def partition_a(done: threading.Event, result: LoadResult) -> None:
        while len(result.accepted) < orders // 4 and not done.wait(0.005):
            pass
        with stack.shared_log() as log:
            # First from the services: the calls it makes from now on wait in the network
            # (for less than its keepalive's 10 s + 5 s, after which it would give up on
            # the connection, and the calls would never arrive).
            hosts.gw_a.partition(hosts.services.ip)
            t0 = time.monotonic()
            try:
                while len(active_on(log, a)) < STUCK and time.monotonic() - t0 < 10:
                    time.sleep(0.02)
                # Caught: they can go no further while it cannot reach the services.
                claimed.extend(active_on(log, a))
                # Then from PostgreSQL: it can neither write nor renew its leases.
                hosts.gw_a.partition(hosts.net.ip, pg.port)
                timeline["cut from PostgreSQL"] = time.monotonic() - t0
                # Until the daemon has taken every one of them over (their lease ran out,
                # by PostgreSQL's clock) and finished it, calling the services with a
                # higher epoch.
                while time.monotonic() - t0 < 30:
                    records = [log.get_sync(saga_id) for saga_id in claimed]
                    if all(r is not None and r.status.finished for r in records):
                        before.update({i: log.transitions_sync(i) for i in claimed})
                        timeline["finished by the daemon"] = time.monotonic() - t0
                        break
                    time.sleep(0.05)
                # The services first: the calls that waited in the network land now, with
                # the old epoch, while the gateway cannot learn from the log that it lost
                # those sagas (it would drop them, and cancel their calls).
                hosts.gw_a.heal(hosts.services.ip)
                timeline["healed from the services"] = time.monotonic() - t0
                while rpc_code_count(stack, "ABORTED") == 0 and time.monotonic() - t0 < 40:
                    time.sleep(0.1)
                timeline["a late call refused"] = time.monotonic() - t0
            finally:
                hosts.gw_a.heal()
                timeline["healed"] = time.monotonic() - t0
                result.kills += 1

    result = run_load(stack, orders, workers=8, urls=[a.url, b.url], during=partition_a)
    report = f"timeline (s): {timeline}"
    assert result.kills == 1, report
    assert len(claimed) >= STUCK, f"the partition caught sagas in flight on the gateway; {report}"
    assert before, f"the daemon finished the cut-off gateway's sagas; {report}"
    assert rpc_code_count(stack, "ABORTED") > 0, f"the late calls were refused; {report}"
    time.sleep(3.0)  # the healed gateway's late writes land, or are refused
    verdict = judge_run(stack, settle_s=60, url=b.url)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders and verdict.counts["orders"] == orders
    with stack.shared_log() as log:
        for saga_id in claimed:
            record = log.get_sync(saga_id)
            assert record is not None and not owned_by(a, record)
            assert log.transitions_sync(saga_id) == before[saga_id], (
                f"{saga_id}: written after the daemon finished it"
            )
    assert a.running, "the gateway carries on by itself after the partition"
    print(report)


def test_postgres_killed_mid_load_and_started_again(
    stack: Stack, hosts: Hosts, pg: PgServer
) -> None:
    a, b = start(stack, hosts)
    orders = 160

    def kill_postgres(done: threading.Event, result: LoadResult) -> None:
        while len(result.accepted) < orders // 3 and not done.wait(0.005):
            pass
        pg.kill()  # every backend at once, mid-transaction
        result.kills += 1
        time.sleep(1.5)  # down for a while: the gateways answer 503 meanwhile
        pg.start()

    result = run_load(stack, orders, urls=[a.url, b.url], during=kill_postgres)
    verdict = judge_run(stack, settle_s=60, url=b.url)
    assert verdict.ok, verdict.report()
    assert len(result.accepted) == orders and verdict.counts["orders"] == orders
    assert result.kills == 1
    hit = verdict.counts.get("HTTP 503", 0) + verdict.counts.get("unknown", 0)
    assert hit > 0 or result.retries > 0, "the kill was felt by the clients"
    processes = [*stack.gateways, *stack.daemons, *stack.replicas]
    assert all(p.running for p in processes), "nobody was restarted, and nobody had to be"
