"""The services' settings: a frozen object built once from the environment at the entry
point (`ServiceSettings.from_env`), then passed down. Nothing reads os.environ elsewhere.

- `SAGA_DATA_DIR`: folder of the ledgers `order.db`, `payment.db`, `inventory.db` (./var)
- `ORDER_SERVICE_ADDR`, `PAYMENT_SERVICE_ADDR`, `INVENTORY_SERVICE_ADDR`: listen addresses
  (127.0.0.1:9090, :9091, :9092); one `host:port`: the callers' list of replicas or
  `dns:` name is not where one replica listens
- `SAGA_GRPC_TLS_CERT`, `SAGA_GRPC_TLS_KEY`, `SAGA_GRPC_TLS_CA`: serve mutual TLS (all
  three or none; engine/net.py)
- `INVENTORY_SEED_STOCK`: stock of a new inventory ledger (prod_1=15,prod_2=10,prod_3=0)
- `SAGA_SQLITE_SYNCHRONOUS`: FULL (survives power loss, the default) or NORMAL (a crash)
- `SAGA_SQLITE_BUSY_TIMEOUT_MS`: how long a write waits for a lock held elsewhere (5000)
- `SAGA_SHUTDOWN_GRACE_S`: how long SIGTERM waits for the calls in flight (5)
- `SAGA_ENV`, `SAGA_FAULTS`: fault injection, SAGA_ENV=test only (services/common/faults.py)
- `ORDER_METRICS_ADDR`, `PAYMENT_METRICS_ADDR`, `INVENTORY_METRICS_ADDR`: Prometheus
  endpoints (127.0.0.1:9465, :9466, :9467; `off` disables one)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from engine.config import (
    Address,
    SettingsError,
    data_dir,
    env_addr,
    env_float,
    env_int,
    env_synchronous,
    parse_addr,
)
from engine.net import TlsFiles, env_tls
from engine.sqlite import DbConfig, Synchronous
from services.common.faults import FaultPlan, parse_faults
from services.common.validate import MAX_ID_LEN, MAX_QUANTITY

__all__ = ["DEFAULT_SEED_STOCK", "ServiceName", "ServiceSettings", "parse_seed_stock"]


class ServiceName(StrEnum):
    ORDER = "order"
    PAYMENT = "payment"
    INVENTORY = "inventory"


ADDRESSES: Final[dict[ServiceName, tuple[str, str]]] = {
    ServiceName.ORDER: ("ORDER_SERVICE_ADDR", "127.0.0.1:9090"),
    ServiceName.PAYMENT: ("PAYMENT_SERVICE_ADDR", "127.0.0.1:9091"),
    ServiceName.INVENTORY: ("INVENTORY_SERVICE_ADDR", "127.0.0.1:9092"),
}
# Each service's Prometheus endpoint (`off` disables it; port 0 picks a free one).
METRICS_ADDRESSES: Final[dict[ServiceName, tuple[str, str]]] = {
    ServiceName.ORDER: ("ORDER_METRICS_ADDR", "127.0.0.1:9465"),
    ServiceName.PAYMENT: ("PAYMENT_METRICS_ADDR", "127.0.0.1:9466"),
    ServiceName.INVENTORY: ("INVENTORY_METRICS_ADDR", "127.0.0.1:9467"),
}
DEFAULT_SEED_STOCK: Final = "prod_1=15,prod_2=10,prod_3=0"
SEED_VAR: Final = "INVENTORY_SEED_STOCK"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    name: ServiceName
    addr: Address
    ledger_path: Path
    synchronous: Synchronous = Synchronous.FULL
    busy_timeout_ms: int = 5_000
    grace_s: float = 5.0
    seed_stock: tuple[tuple[str, int], ...] = ()  # inventory only
    faults: FaultPlan = field(default_factory=FaultPlan)
    metrics_addr: Address | None = None  # None: no metrics endpoint
    tls: TlsFiles | None = None  # None: plaintext

    @property
    def db(self) -> DbConfig:
        return DbConfig(self.ledger_path, self.synchronous, self.busy_timeout_ms)

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> ServiceSettings:
        try:
            service = ServiceName(name)
        except ValueError:
            known = ", ".join(s.value for s in ServiceName)
            raise SettingsError(f"unknown service {name!r} (known: {known})") from None
        addr_var, addr_default = ADDRESSES[service]
        seed: tuple[tuple[str, int], ...] = ()
        if service is ServiceName.INVENTORY:
            seed = parse_seed_stock(env.get(SEED_VAR) or DEFAULT_SEED_STOCK)
        return cls(
            name=service,
            addr=listen_addr(env, addr_var, addr_default),
            ledger_path=data_dir(env) / f"{service.value}.db",
            synchronous=env_synchronous(env),
            busy_timeout_ms=env_int(env, "SAGA_SQLITE_BUSY_TIMEOUT_MS", 5_000, minimum=1),
            grace_s=env_float(env, "SAGA_SHUTDOWN_GRACE_S", 5.0),
            seed_stock=seed,
            faults=fault_plan(env),
            metrics_addr=metrics_addr(env, *METRICS_ADDRESSES[service]),
            tls=env_tls(env),
        )


def listen_addr(env: Mapping[str, str], name: str, default: str) -> Address:
    """Where this replica listens: one host:port, never the callers' list or dns: name."""
    raw = env.get(name) or default
    if "," in raw or raw.strip().startswith("dns:"):
        raise SettingsError(
            f"{name}={raw!r}: a service listens on one HOST:PORT; a list of replicas or a "
            "dns: name is for the callers: give each replica its own address"
        )
    return parse_addr(raw, name)


def metrics_addr(env: Mapping[str, str], name: str, default: str) -> Address | None:
    if (env.get(name) or "").strip().lower() == "off":
        return None
    return env_addr(env, name, default)


def fault_plan(env: Mapping[str, str]) -> FaultPlan:
    """SAGA_FAULTS only in test mode; set anywhere else it is a mistake, not a no-op."""
    raw = env.get("SAGA_FAULTS", "")
    if env.get("SAGA_ENV") != "test":
        if raw.strip():
            raise SettingsError(
                "SAGA_FAULTS is set but SAGA_ENV is not 'test': fault injection is for "
                "tests only; unset SAGA_FAULTS"
            )
        return FaultPlan()
    return parse_faults(raw, _rpc_methods())


def parse_seed_stock(raw: str, name: str = SEED_VAR) -> tuple[tuple[str, int], ...]:
    """`prod_1=15,prod_2=10,prod_3=0` -> (("prod_1", 15), ...); any mistake names the entry."""
    stock: dict[str, int] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        product, sep, quantity_text = (text.strip() for text in entry.partition("="))
        if not sep or not product:
            raise SettingsError(f"{name}: {entry!r}: expected PRODUCT=QUANTITY, e.g. prod_1=15")
        if len(product) > MAX_ID_LEN:
            raise SettingsError(f"{name}: {entry!r}: a product id has at most {MAX_ID_LEN} chars")
        if product in stock:
            raise SettingsError(f"{name}: {product!r} is given twice")
        try:
            quantity = int(quantity_text)
        except ValueError:
            raise SettingsError(f"{name}: {entry!r}: {quantity_text!r} is not a number") from None
        if not 0 <= quantity <= 1000 * MAX_QUANTITY:
            raise SettingsError(
                f"{name}: {entry!r}: expected a quantity from 0 to {1000 * MAX_QUANTITY}"
            )
        stock[product] = quantity
    return tuple(stock.items())


def _rpc_methods() -> frozenset[str]:
    """Every RPC of the three services: SAGA_FAULTS may be shared by all of them."""
    from proto.inventory.v1 import inventory_pb2
    from proto.order.v1 import order_pb2
    from proto.payment.v1 import payment_pb2

    return frozenset(
        method.name
        for module in (inventory_pb2, order_pb2, payment_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    )
