"""The whole system as real processes for resilience tests: the three services, recovery
daemons (and the gateway once it runs), sharing one data folder and one set of ports,
plus the audit of the contract's invariants.

    stack = Stack.create(tmp_path)
    stack.start_services()
    daemon = stack.recovery()          # `saga recovery`, ready when its metrics answer
    ...
    report = stack.audit(wait_s=30)    # waits for running sagas, then checks
    assert report.ok, report.violations
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.log import NewSaga
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from gateway.orders import ORDER_SAGA, Item, OrderRequest
from gateway.participants import ServiceAddresses
from recovery.audit import AuditReport, audit
from recovery.audit_io import read_snapshot, wait_until_settled
from tests.support.procs import (
    SERVICE_ADDR_VARS,
    SagaProcess,
    ServiceProcess,
    base_env,
    free_port,
    start_service,
    tcp_open,
)

__all__ = ["ORDERS", "DaemonProcess", "Stack", "order"]


class DaemonProcess(SagaProcess):
    """`saga recovery`, ready when its metrics endpoint accepts connections."""

    def __init__(self, env: Mapping[str, str], log_path: Path, metrics_port: int) -> None:
        self.metrics_port = metrics_port
        super().__init__(["recovery"], env, log_path, lambda: tcp_open("127.0.0.1", metrics_port))


def order(price_cents: int, product: str = "prod_1", quantity: int = 1) -> OrderRequest:
    return OrderRequest("cust_1", (Item(product, quantity, price_cents),))


# The three paths of the contract: confirmed, declined (over 500.00), out of stock.
ORDERS: Mapping[str, OrderRequest] = {
    "success": order(5_000),
    "declined": order(60_000),
    "out_of_stock": order(100, "prod_3"),
}


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    others: list[SagaProcess] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, **extra_env: str) -> Stack:
        data = tmp_path / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = base_env(
            SAGA_DATA_DIR=str(data),
            SAGA_ENV="test",
            SAGA_LOG_FORMAT="text",
            # enough prod_1 that load tests end by their own rules, not by running dry
            INVENTORY_SEED_STOCK="prod_1=100000,prod_2=10,prod_3=0",
        )
        for var in SERVICE_ADDR_VARS.values():
            env[var] = f"127.0.0.1:{free_port()}"
        env.update(extra_env)
        return cls(data, env)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "saga.db"

    @property
    def addresses(self) -> ServiceAddresses:
        return ServiceAddresses.from_env(self.env)

    def start_services(self, extra_env: Mapping[str, str] | None = None) -> None:
        for name, var in SERVICE_ADDR_VARS.items():
            port = int(self.env[var].rsplit(":", 1)[1])
            env = {**self.env, **(extra_env or {})}
            self.services[name] = start_service(name, self.data_dir, port, env)

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
        proc = DaemonProcess(env, self.data_dir / f"{name}.log", port)
        self.others.append(proc)
        return proc.start(wait=wait)

    # ---- the log, directly ---------------------------------------------------------------

    @contextlib.contextmanager
    def log(self) -> Iterator[SqliteSagaLog]:
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
        if wait_s:
            wait_until_settled(self.log_path, wait_s)
        return audit(read_snapshot(self.log_path, self.addresses))

    def stop_all(self) -> None:
        for proc in [*self.others, *self.services.values()]:
            proc.kill()
