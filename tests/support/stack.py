"""The whole system as real processes, for every end-to-end and resilience suite: the three
services, the gateway, recovery daemons and (when asked) a private Redis, sharing one data
folder and one set of free ports; plus the audit of the contract's invariants.

    stack = Stack.create(tmp_path)
    stack.start_services()
    stack.start_gateway()              # `saga gateway`, ready when /healthz answers
    daemon = stack.recovery()          # `saga recovery`, ready when its metrics answer
    with stack.client() as http: ...
    report = stack.audit(wait_s=30)    # waits for running sagas, then checks
    assert report.ok, report.violations
    stack.close()                      # SIGKILLs whatever still runs
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import httpx
import pytest
import redis

from engine.log_settings import SagaLogSettings
from engine.saga_log import NewSaga
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from orders.audit import AuditReport, audit
from orders.audit_io import read_snapshot, wait_until_settled
from orders.channels import sync_channel
from orders.model import ORDER_SAGA, Item, OrderRequest
from orders.participants import ServiceAddresses
from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2_grpc
from proto.payment.v1 import payment_pb2_grpc
from tests.support.procs import (
    SERVICE_ADDR_VARS,
    SagaProcess,
    ServiceProcess,
    base_env,
    free_port,
    http_ok,
    start_service,
    tcp_open,
)

__all__ = [
    "ORDERS",
    "PLENTY",
    "TERMINAL",
    "DaemonProcess",
    "Redis",
    "Stack",
    "http_ok",
    "order",
    "wait_terminal",
]

TERMINAL: Final = ("CONFIRMED", "CANCELLED")
# Enough prod_1 that load tests end by their own rules, not by running dry.
PLENTY: Final = "prod_1=100000,prod_2=10,prod_3=0"


def order(price_cents: int, product: str = "prod_1", quantity: int = 1) -> OrderRequest:
    return OrderRequest("cust_1", (Item(product, quantity, price_cents),))


# The three paths of the contract: confirmed, declined (over 500.00), out of stock.
ORDERS: Mapping[str, OrderRequest] = {
    "success": order(5_000),
    "declined": order(60_000),
    "out_of_stock": order(100, "prod_3"),
}


class DaemonProcess(SagaProcess):
    """`saga recovery`, ready when its metrics endpoint accepts connections."""

    def __init__(self, env: Mapping[str, str], log_path: Path, metrics_port: int) -> None:
        self.metrics_port = metrics_port
        super().__init__(["recovery"], env, log_path, lambda: tcp_open("127.0.0.1", metrics_port))


@dataclass
class Stack:
    data: Path
    env: dict[str, str]  # what every process of the stack sees (plus its own extras)
    port: int  # the gateway's HTTP port
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    gateway: SagaProcess | None = None
    daemons: list[DaemonProcess] = field(default_factory=list)
    _channels: list[grpc.Channel] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, **extra_env: str) -> Stack:
        data = tmp_path / "data"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = base_env(
            SAGA_DATA_DIR=str(data),
            SAGA_ENV="test",  # crash points and fault injection may be switched on
            SAGA_LOG_FORMAT="text",
            SAGA_DRAIN_S="2",
            SAGA_READY_TIMEOUT_S="5",  # a loaded test machine is no reason for a 503
            HTTP_ADDR=f"127.0.0.1:{port}",
            **{var: f"127.0.0.1:{free_port()}" for var in SERVICE_ADDR_VARS.values()},
        )
        env.update(extra_env)
        return cls(data, env, port)

    # ---- processes -----------------------------------------------------------------------

    def start_services(self, extra_env: Mapping[str, str] | None = None) -> None:
        for name, var in SERVICE_ADDR_VARS.items():
            port = int(self.env[var].rsplit(":", 1)[1])
            env = {**self.env, **(extra_env or {})}
            self.services[name] = start_service(
                name, self.data, port, env, wait=False, probe_tls=self.addresses.tls
            )
        for svc in self.services.values():
            svc.wait_ready()

    def start_gateway(
        self, *, wait: bool = True, env: Mapping[str, str] | None = None, **extra: str
    ) -> SagaProcess:
        """`saga gateway` on this stack (again, after a stop: same port, same log), with
        `env` and `extra` added to the stack's environment."""
        self.gateway = SagaProcess(
            ["gateway"],
            {**self.env, **(env or {}), **extra},
            self.data / "gateway.log",
            ready=lambda: http_ok(self.url + "/healthz"),
        )
        return self.gateway.start(wait=wait)

    def recovery(
        self,
        extra_env: Mapping[str, str] | None = None,
        *,
        name: str = "recovery",
        wait: bool = True,
    ) -> DaemonProcess:
        port = free_port()
        env = {
            **self.env,
            "RECOVERY_METRICS_ADDR": f"127.0.0.1:{port}",
            "SAGA_RECOVERY_INTERVAL_S": "0.2",
            "SAGA_LEASE_S": "2",
            **(extra_env or {}),
        }
        proc = DaemonProcess(env, self.data / f"{name}.log", port)
        self.daemons.append(proc)
        return proc.start(wait=wait)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        for proc in [*self.daemons, self.gateway, *self.services.values()]:
            if proc is not None:
                proc.kill()

    # ---- clients -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addresses(self) -> ServiceAddresses:
        return ServiceAddresses.from_env(self.env)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def _channel(self, name: str) -> grpc.Channel:
        addresses = self.addresses
        targets = {"order": addresses.order, "payment": addresses.payment}
        channel = sync_channel(targets.get(name, addresses.inventory), addresses.tls)
        self._channels.append(channel)
        return channel

    def order_stub(self) -> order_pb2_grpc.OrderStub:
        return order_pb2_grpc.OrderStub(self._channel("order"))

    def payment_stub(self) -> payment_pb2_grpc.PaymentStub:
        return payment_pb2_grpc.PaymentStub(self._channel("payment"))

    def inventory_stub(self) -> inventory_pb2_grpc.InventoryStub:
        return inventory_pb2_grpc.InventoryStub(self._channel("inventory"))

    # ---- the log, directly ---------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data / "saga.db"

    @contextlib.contextmanager
    def log(self) -> Iterator[SqliteSagaLog]:
        """The saga log file, opened by this test process (several processes may)."""
        log = SqliteSagaLog.open(DbConfig(self.log_path))
        try:
            yield log
        finally:
            log.close_sync()

    def seed_sagas(self, orders: Sequence[tuple[str, OrderRequest]], *, owner: str | None) -> None:
        """Order sagas as a gateway leaves them when it dies right after its 201: durable,
        nothing run, owned by a dead process (lease long expired) or by nobody."""

        async def create(log: SqliteSagaLog) -> None:
            await asyncio.gather(
                *(
                    log.create(
                        NewSaga(oid, ORDER_SAGA, req.to_payload(), idempotency_key=f"key-{oid}"),
                        owner=owner,
                        lease_expires_ms=1,
                        now_ms=1,
                    )
                    for oid, req in orders
                )
            )

        with self.log() as log:
            asyncio.run(create(log))

    # ---- the verdict ---------------------------------------------------------------------

    def audit(self, wait_s: float = 0.0) -> AuditReport:
        """The contract's invariants across the saga log and the three services."""
        settings = SagaLogSettings.from_env(self.env)  # SAGA_DATABASE_URL, else the file
        if wait_s:
            wait_until_settled(settings, wait_s)
        return audit(read_snapshot(settings, self.addresses))


def wait_for(check: Callable[[], bool], within_s: float = 30.0, what: str = "timed out") -> None:
    """Poll `check` until it is true; fail with `what` after `within_s`."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_terminal(client: httpx.Client, order_id: str, within_s: float = 30.0) -> dict[str, Any]:
    """Poll GET /orders/{id} until CONFIRMED or CANCELLED (bounded)."""
    deadline = time.monotonic() + within_s
    while True:
        resp = client.get(f"/orders/{order_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"order {order_id} still {body['status']}"
        time.sleep(0.05)


class Redis:
    """A private redis-server on a free port, nothing on disk (never the shared 6379)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not tcp_open("127.0.0.1", self.port):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flushall(self) -> None:
        with redis.Redis(port=self.port, socket_timeout=5) as client:
            client.flushall()

    def keys(self) -> int:
        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return int(client.dbsize())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
