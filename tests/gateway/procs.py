"""The whole stack as real processes for the gateway's end-to-end tests: `saga service
order|payment|inventory` and `saga gateway` on free ports, every SQLite file in one data
folder, and a private `redis-server` when a test wants one (never the shared 6379)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis

from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from gateway.participants import ServiceAddresses
from proto.inventory.v1 import inventory_pb2_grpc
from proto.order.v1 import order_pb2_grpc
from proto.payment.v1 import payment_pb2_grpc
from recovery.audit import AuditReport, audit
from recovery.audit_io import read_snapshot
from tests.support.procs import (
    SERVICE_ADDR_VARS,
    SagaProcess,
    ServiceProcess,
    base_env,
    free_port,
    start_service,
    tcp_open,
)

TERMINAL = ("CONFIRMED", "CANCELLED")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    data: Path
    services: dict[str, ServiceProcess]
    gateway_env: dict[str, str]
    port: int = field(default_factory=free_port)
    gateway: SagaProcess | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_gateway(self, **extra: str) -> SagaProcess:
        """`saga gateway` on this stack (again, after a stop: same port, same log)."""
        env = {**self.gateway_env, **extra}
        self.gateway = SagaProcess(
            ["gateway"],
            env,
            self.data / "gateway.log",
            ready=lambda: http_ok(self.url + "/healthz"),
        )
        return self.gateway.start()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def _channel(self, name: str) -> grpc.Channel:
        channel = grpc.insecure_channel(self.services[name].address)
        self._channels.append(channel)
        return channel

    def order_stub(self) -> order_pb2_grpc.OrderStub:
        return order_pb2_grpc.OrderStub(self._channel("order"))

    def payment_stub(self) -> payment_pb2_grpc.PaymentStub:
        return payment_pb2_grpc.PaymentStub(self._channel("payment"))

    def inventory_stub(self) -> inventory_pb2_grpc.InventoryStub:
        return inventory_pb2_grpc.InventoryStub(self._channel("inventory"))

    @contextlib.contextmanager
    def log(self) -> Iterator[SqliteSagaLog]:
        """The saga log file, opened by this test process (several processes may)."""
        log = SqliteSagaLog.open(DbConfig(self.data / "saga.db"))
        try:
            yield log
        finally:
            log.close_sync()

    def audit(self) -> AuditReport:
        """The contract's invariants across the saga log and the three services."""
        addresses = ServiceAddresses.from_env(self.gateway_env)
        return audit(read_snapshot(self.data / "saga.db", addresses))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        if self.gateway is not None:
            self.gateway.kill()
        for svc in self.services.values():
            svc.kill()


@contextlib.contextmanager
def stack(
    tmp_path: Path,
    *,
    service_env: Mapping[str, str] | None = None,
    gateway_env: Mapping[str, str] | None = None,
    start_gateway: bool = True,
) -> Iterator[Stack]:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    the_stack = Stack(data, {}, {})
    try:
        for name in ("order", "payment", "inventory"):
            the_stack.services[name] = start_service(
                name, data, free_port(), service_env, wait=False
            )
        for svc in the_stack.services.values():
            svc.wait_ready()
        the_stack.gateway_env = base_env(
            SAGA_DATA_DIR=str(data),
            SAGA_DRAIN_S="2",
            HTTP_ADDR=f"127.0.0.1:{the_stack.port}",
            **{SERVICE_ADDR_VARS[n]: s.address for n, s in the_stack.services.items()},
        )
        the_stack.gateway_env.update(gateway_env or {})
        if start_gateway:
            the_stack.start_gateway()
        yield the_stack
    finally:
        the_stack.close()


def wait_terminal(client: httpx.Client, order_id: str, within_s: float = 30.0) -> dict[str, Any]:
    """Poll GET /orders/{id} until CONFIRMED or CANCELLED (bounded)."""
    deadline = time.monotonic() + within_s
    while True:
        resp = client.get(f"/orders/{order_id}")
        assert resp.status_code == 200, resp.text
        order: dict[str, Any] = resp.json()
        if order["status"] in TERMINAL:
            return order
        assert time.monotonic() < deadline, f"order {order_id} still {order['status']}"
        time.sleep(0.05)


class Redis:
    """A private redis-server on a free port, nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
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
