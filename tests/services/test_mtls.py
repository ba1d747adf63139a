"""Mutual TLS between the callers and the services, with real processes and sockets: only
a caller whose certificate the services' CA signed gets in, and it is refused in the
handshake, before any ledger is touched; a whole order flow works over TLS; bad TLS
settings, or a bad list of replicas, stop a process at start with one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from engine.net import TlsFiles, env_tls, parse_target
from orders.channels import sync_channel
from orders.participants import ServiceAddresses
from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from saga.children import saga_argv
from tests.support.certs import KeyPair, Pki, make_pki
from tests.support.procs import ServiceProcess, base_env, free_port, start_service
from tests.support.stack import ORDERS, Stack, wait_terminal

pytestmark = pytest.mark.timeout(120)

EPOCH = (("x-saga-epoch", "1"),)
# The contract's three paths: confirmed, declined (over 500.00), out of stock.
BODIES = {
    "success": {
        "customer_id": "c1",
        "items": [{"product_id": "prod_1", "quantity": 1, "price": 50}],
    },
    "declined": {
        "customer_id": "c1",
        "items": [{"product_id": "prod_1", "quantity": 1, "price": 600}],
    },
    "out_of_stock": {
        "customer_id": "c1",
        "items": [{"product_id": "prod_3", "quantity": 1, "price": 5}],
    },
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_of(pki: Pki, pair: KeyPair) -> TlsFiles:
    tls = env_tls(pki.env(pair))
    assert tls is not None
    return tls


@pytest.fixture
def inventory(tmp_path: Path, pki: Pki) -> Iterator[ServiceProcess]:
    """`saga service inventory` serving mutual TLS with the server certificate."""
    with start_service(
        "inventory",
        tmp_path / "data",
        free_port(),
        pki.env(pki.server),
        probe_tls=tls_of(pki, pki.client),
    ) as proc:
        yield proc


def reserve(channel: grpc.Channel, order_id: str) -> inventory_pb2.ReserveResponse:
    stub = inventory_pb2_grpc.InventoryStub(channel)
    request = inventory_pb2.ReserveRequest(
        order_id=order_id, items=[inventory_pb2.StockItem(product_id="prod_1", quantity=1)]
    )
    response: inventory_pb2.ReserveResponse = stub.Reserve(request, metadata=EPOCH, timeout=5)
    return response


def test_only_a_certificate_of_the_ca_gets_in(inventory: ServiceProcess, pki: Pki) -> None:
    target = parse_target(inventory.address, "inventory")
    good = tls_of(pki, pki.client)
    with sync_channel(target, good) as channel:
        assert reserve(channel, "o-good").success

    refused: dict[str, grpc.StatusCode] = {}
    intruders = {
        "no certificate": None,
        "self-signed": tls_of(pki, pki.self_signed),
        "another CA's": tls_of(pki, pki.other_ca_client),
    }
    for what, tls in intruders.items():
        with sync_channel(target, tls) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                reserve(channel, f"o-{what}")
            refused[what] = caught.value.code()
    allowed = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED}
    assert set(refused.values()) <= allowed, refused

    # A caller that does not trust the services' CA refuses them in turn.
    stranger = env_tls(pki.env(pki.client, ca=pki.other_ca_client.cert.parent / "other-ca.pem"))
    with sync_channel(target, stranger) as channel, pytest.raises(grpc.RpcError):
        reserve(channel, "o-distrustful")

    # The ledger saw the good call only: one reservation, one unit gone.
    with sync_channel(target, good) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        listed = stub.ListReservations(inventory_pb2.ListReservationsRequest(), timeout=5)
        stock = stub.GetStock(inventory_pb2.GetStockRequest(product_ids=["prod_1"]), timeout=5)
    assert [r.order_id for r in listed.reservations] == ["o-good"]
    assert stock.initial["prod_1"] - stock.available["prod_1"] == 1


def probe(env: dict[str, str], address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        saga_argv(["probe", "grpc", address]), env=env, capture_output=True, text=True, timeout=30
    )


def test_the_probe_presents_the_certificate(inventory: ServiceProcess, pki: Pki) -> None:
    assert probe(base_env(**pki.env(pki.client)), inventory.address).returncode == 0
    plain = probe(base_env(), inventory.address)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr


@pytest.mark.parametrize("command", [["service", "inventory"], ["gateway"], ["audit"]])
def test_bad_tls_settings_stop_a_process_with_one_line(
    command: list[str], pki: Pki, tmp_path: Path
) -> None:
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path),
        SAGA_GRPC_TLS_CERT=str(pki.client.cert),
        SAGA_GRPC_TLS_CA=str(pki.ca),
        HTTP_ADDR=f"127.0.0.1:{free_port()}",
        INVENTORY_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
    )
    done = subprocess.run(saga_argv(command), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saga: error:"), done.stderr
    assert "SAGA_GRPC_TLS_KEY missing" in lines[0]


def test_without_tls_a_public_bind_warns_once(tmp_path: Path) -> None:
    # 0.0.0.0 is the mistake this warns about; the service lives for a moment only.
    port = free_port()
    with start_service(
        "payment", tmp_path, port, {"PAYMENT_SERVICE_ADDR": f"0.0.0.0:{port}"}
    ) as svc:
        assert svc.output().count("WITHOUT TLS") == 1
    with start_service("order", tmp_path, free_port()) as loopback:
        assert "WITHOUT TLS" not in loopback.output()


def test_a_whole_order_flow_over_tls(tmp_path: Path, pki: Pki) -> None:
    """Gateway, recovery daemon and audit with the client certificate, the services with
    the server certificate: orders end as the contract says, the audit is clean."""
    stack = Stack.create(tmp_path, **pki.env(pki.client))
    try:
        stack.start_services(pki.env(pki.server))
        # Sagas a dead gateway left: the daemon alone finishes them, over TLS.
        stack.seed_sagas([(f"o-{name}", req) for name, req in ORDERS.items()], owner=None)
        stack.recovery()
        recovered = stack.audit(wait_s=30)
        assert recovered.ok, recovered.violations
        assert recovered.by_status == {"CONFIRMED": 1, "CANCELLED": 2}
        stack.start_gateway()
        with stack.client() as http:
            assert http.get("/readyz").status_code == 200
            ids = {}
            for name, body in BODIES.items():
                resp = http.post("/orders", json=body)
                assert resp.status_code == 201, resp.text
                ids[name] = resp.json()["id"]
            ended = {name: wait_terminal(http, oid)["status"] for name, oid in ids.items()}
        assert ended == {
            "success": "CONFIRMED",
            "declined": "CANCELLED",
            "out_of_stock": "CANCELLED",
        }
        report = stack.audit(wait_s=30)
        assert report.ok, report.violations
        # A caller without a certificate reaches nothing: the services are closed to it.
        assert probe(base_env(), stack.env["PAYMENT_SERVICE_ADDR"]).returncode == 1
    finally:
        stack.close()


def test_replica_targets_over_tls(inventory: ServiceProcess, pki: Pki) -> None:
    """grpc checks one name per channel: a dns: name is checked as itself (a DNS SAN); a
    list has none of its own, so SAGA_GRPC_TLS_SERVER_NAME names one its certificates
    carry; a name they do not carry is refused."""
    port = inventory.port
    twice = f"127.0.0.1:{port},127.0.0.2:{port}"  # .2 refuses: round_robin skips it
    client = pki.env(pki.client)
    cases = [
        (f"dns:localhost:{port}", {}, True),
        (twice, {"SAGA_GRPC_TLS_SERVER_NAME": "localhost"}, True),
        (twice, {"SAGA_GRPC_TLS_SERVER_NAME": "elsewhere.example"}, False),
    ]
    for raw, extra, works in cases:
        services = ServiceAddresses.from_env({**client, **extra, "INVENTORY_SERVICE_ADDR": raw})
        with sync_channel(services.inventory, services.tls) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            request = inventory_pb2.GetStockRequest(product_ids=["prod_1"])
            if works:
                assert stub.GetStock(request, timeout=5).initial["prod_1"] == 15, raw
            else:
                with pytest.raises(grpc.RpcError):
                    stub.GetStock(request, timeout=5)


@pytest.mark.parametrize("command", [["gateway"], ["recovery"], ["audit"]])
def test_a_bad_replica_list_stops_a_caller_with_one_line(
    command: list[str], tmp_path: Path
) -> None:
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path),
        HTTP_ADDR=f"127.0.0.1:{free_port()}",
        RECOVERY_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        PAYMENT_SERVICE_ADDR="10.0.0.5:9091,,10.0.0.6:9091",
    )
    done = subprocess.run(saga_argv(command), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saga: error: PAYMENT_SERVICE_ADDR="), lines
