"""The real stack for the benchmarks that need it (e2e, recovery, overload): the three
services, the gateway, a recovery daemon and a private Redis, each its own process on
free ports, sharing one fresh data folder. Each process is a saga.children.Child, which
also reads what a benchmark measures off it (CPU seconds, resident memory).

Deliberately separate from tests/support/stack.py: the benchmarks are an installed
package and must not import the test suite; what they need is smaller (start, wait until
ready, measure, kill).

    with BenchStack(tmp, redis=True) as stack:
        stack.start_services()
        stack.start_gateway(memory=False)
        ... stack.url, stack.gateway.pid ...
"""

from __future__ import annotations

import functools
import shutil
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from bench.errors import StackError
from saga.children import SERVICE_ADDR_VARS, Child, base_env, saga_argv
from saga.probes import free_port, grpc_serving, http_ok, tcp_open

__all__ = ["METRICS_ADDR_VARS", "BenchStack"]

METRICS_ADDR_VARS: Final = {
    "order": "ORDER_METRICS_ADDR",
    "payment": "PAYMENT_METRICS_ADDR",
    "inventory": "INVENTORY_METRICS_ADDR",
}
# services/common/observe.py's counter of RPCs answered, by service, method and code.
_RPC_COUNTER: Final = "saga_service_rpc_total{"

# Enough stock that no benchmark runs dry: every order is for one prod_1.
SEED_STOCK: Final = "prod_1=1000000000,prod_2=10,prod_3=0"


@dataclass
class BenchStack:
    """Services, gateway, daemon and Redis on one fresh data folder (see the module)."""

    root: Path
    redis: bool = True
    seed_stock: str = SEED_STOCK
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Child] = field(default_factory=dict)
    gateway: Child | None = None
    more_gateways: dict[str, tuple[int, Child]] = field(default_factory=dict)  # name: port
    daemon: Child | None = None
    more_daemons: dict[str, Child] = field(default_factory=dict)
    redis_proc: Child | None = None

    def __post_init__(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.env = base_env(
            SAGA_DATA_DIR=str(self.data),
            SAGA_LOG_FORMAT="text",
            SAGA_LOG_LEVEL="WARNING",  # a log line per saga would be the bottleneck
            HTTP_ADDR=f"127.0.0.1:{self.port}",
            INVENTORY_SEED_STOCK=self.seed_stock,
            **{var: f"127.0.0.1:{free_port()}" for var in SERVICE_ADDR_VARS.values()},
            # Each service's Prometheus endpoint on a known port: its RPC counter is how a
            # benchmark counts the calls it answered (CPU per call).
            **{var: f"127.0.0.1:{free_port()}" for var in METRICS_ADDR_VARS.values()},
        )

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.data / "saga.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def service_calls(self) -> dict[str, int]:
        """RPCs each running service has answered so far (any method, any code), read
        from its Prometheus endpoint; a service whose endpoint does not answer is left out."""
        calls: dict[str, int] = {}
        for name, var in METRICS_ADDR_VARS.items():
            if name not in self.services:
                continue
            try:
                url = f"http://{self.env[var]}/metrics"
                with urllib.request.urlopen(url, timeout=10) as resp:
                    text = resp.read().decode("utf-8")
            except OSError:
                continue
            calls[name] = sum(
                int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines()
                if line.startswith(_RPC_COUNTER)
            )
        return calls

    def processes(self) -> dict[str, Child]:
        """Every process of the stack now running, by role."""
        procs = dict(self.services)
        for name, proc in (
            ("gateway", self.gateway),
            *((name, child) for name, (_, child) in self.more_gateways.items()),
            ("recovery", self.daemon),
            *self.more_daemons.items(),
            ("redis", self.redis_proc),
        ):
            if proc is not None:
                procs[name] = proc
        return procs

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Child:
        return Child.spawn(name, argv, env, log_path=self.root / f"{name}.log", cwd=self.root)

    def _saga(self, name: str, args: list[str], env: Mapping[str, str]) -> Child:
        return self._spawn(name, saga_argv(args), env)

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed (use --no-redis)")
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.root)]
        self.redis_proc = self._spawn("redis", argv, self.env)
        self.redis_proc.wait_ready(lambda: tcp_open("127.0.0.1", port), 10.0)
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

    def start_services(self) -> None:
        for name in SERVICE_ADDR_VARS:
            self.services[name] = self._saga(name, ["service", name], self.env)
        for name, var in SERVICE_ADDR_VARS.items():
            self.services[name].wait_ready(functools.partial(grpc_serving, self.env[var]))

    def start_service(self, name: str) -> Child:
        """One service alone (`order`, `payment` or `inventory`), on its own ledger; its
        address is `env[SERVICE_ADDR_VARS[name]]`."""
        self.services[name] = self._saga(name, ["service", name], self.env)
        addr = self.env[SERVICE_ADDR_VARS[name]]
        self.services[name].wait_ready(functools.partial(grpc_serving, addr))
        return self.services[name]

    def start_gateway(self, *, memory: bool = False, **extra: str) -> Child:
        if self.redis and "REDIS_URL" not in self.env:
            self.start_redis()
        env = {**self.env, "SAGA_ENV": "test", **extra}  # test mode: memory is allowed
        if memory:
            env["SAGA_LOG_BACKEND"] = "memory"
        self.gateway = self._saga("gateway", ["gateway"], env)
        self.gateway.wait_ready(lambda: http_ok(self.url + "/healthz"))
        return self.gateway

    def add_gateway(self, name: str, **extra: str) -> int:
        """One more `saga gateway` on the same log (which must be one that several
        processes can share), on its own free port; returns the port."""
        if self.redis and "REDIS_URL" not in self.env:
            self.start_redis()
        port = free_port()
        env = {**self.env, **extra, "HTTP_ADDR": f"127.0.0.1:{port}"}
        child = self._saga(name, ["gateway"], env)
        self.more_gateways[name] = (port, child)
        child.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
        return port

    def start_recovery(self, **extra: str) -> Child:
        return self.start_recoveries(1, **extra)[0]

    def start_recoveries(self, count: int, **extra: str) -> list[Child]:
        """`count` recovery daemons on the same log, spawned together, then each waited
        for: the first is `daemon`, the others `recovery-2`, `recovery-3`, …"""
        started: list[tuple[Child, int]] = []
        for i in range(1, count + 1):
            port = free_port()
            env = {**self.env, "RECOVERY_METRICS_ADDR": f"127.0.0.1:{port}", **extra}
            name = "recovery" if i == 1 else f"recovery-{i}"
            child = self._saga(name, ["recovery"], env)
            if i == 1:
                self.daemon = child
            else:
                self.more_daemons[name] = child
            started.append((child, port))
        for child, port in started:
            child.wait_ready(functools.partial(tcp_open, "127.0.0.1", port))
        return [child for child, _ in started]

    def close(self) -> None:
        for proc in self.processes().values():
            proc.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
