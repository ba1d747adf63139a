"""The real stack for the benchmarks that need it (e2e, recovery, overload): the three
services, the gateway, a recovery daemon and a private Redis, each its own process on
free ports, sharing one fresh data folder; plus what a benchmark reads off a process
(CPU seconds, resident memory) from /proc.

Deliberately separate from tests/support/stack.py: the benchmarks are an installed
package and must not import the test suite; what they need is smaller (start, wait until
ready, measure, kill).

    with BenchStack(tmp, redis=True) as stack:
        stack.start_services()
        stack.start_gateway(memory=False)
        ... stack.url, stack.gateway.pid ...
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from saga.probes import free_port, grpc_serving, http_ok, tcp_open

__all__ = ["CLOCK_TICKS", "BenchStack", "Proc", "StackError"]

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
SERVICES: Final = {
    "order": "ORDER_SERVICE_ADDR",
    "payment": "PAYMENT_SERVICE_ADDR",
    "inventory": "INVENTORY_SERVICE_ADDR",
}
# Settings of the project a developer's shell may have set: the stack says what it means.
_PROJECT_VARS: Final = (
    "REDIS_URL",
    "HTTP_ADDR",
    "RECOVERY_METRICS_ADDR",
    "INVENTORY_SEED_STOCK",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    *SERVICES.values(),
)
# Enough stock that no benchmark runs dry: every order is for one prod_1.
SEED_STOCK: Final = "prod_1=1000000000,prod_2=10,prod_3=0"


class StackError(RuntimeError):
    """A process of the stack exited or did not get ready; the message ends with its log."""


@dataclass
class Proc:
    """One child process of the stack, in its own session, output to its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive:
                raise StackError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise StackError(f"{self.name} was not ready in {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time this process has used so far (/proc/PID/stat)."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def rss_bytes(self) -> int | None:
        """Resident set size now (VmRSS of /proc/PID/status); None once it has exited."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def base_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the project's settings (SAGA_*, *_ADDR, …),
    plus `overrides`: a child sees only what its caller sets. The services' metrics
    endpoints go on free ports, so that stacks never collide on the defaults."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SAGA_") and k not in _PROJECT_VARS
    }
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("ORDER_METRICS_ADDR", "PAYMENT_METRICS_ADDR", "INVENTORY_METRICS_ADDR"):
        env[var] = "127.0.0.1:0"
    env.update(overrides)
    return env


@dataclass
class BenchStack:
    """Services, gateway, daemon and Redis on one fresh data folder (see the module)."""

    root: Path
    redis: bool = True
    seed_stock: str = SEED_STOCK
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Proc] = field(default_factory=dict)
    gateway: Proc | None = None
    daemon: Proc | None = None
    redis_proc: Proc | None = None

    def __post_init__(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.env = base_env(
            SAGA_DATA_DIR=str(self.data),
            SAGA_LOG_FORMAT="text",
            SAGA_LOG_LEVEL="WARNING",  # a log line per saga would be the bottleneck
            HTTP_ADDR=f"127.0.0.1:{self.port}",
            INVENTORY_SEED_STOCK=self.seed_stock,
            **{var: f"127.0.0.1:{free_port()}" for var in SERVICES.values()},
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

    def processes(self) -> dict[str, Proc]:
        """Every process of the stack now running, by role."""
        procs = dict(self.services)
        for name, proc in (
            ("gateway", self.gateway),
            ("recovery", self.daemon),
            ("redis", self.redis_proc),
        ):
            if proc is not None:
                procs[name] = proc
        return procs

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Proc:
        log_path = self.root / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Proc(name, popen, log_path)

    def _saga(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        return self._spawn(name, [sys.executable, "-m", "saga", *args], env)

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
        for name in SERVICES:
            self.services[name] = self._saga(name, ["service", name], self.env)
        for name, var in SERVICES.items():
            self.services[name].wait_ready(functools.partial(grpc_serving, self.env[var]))

    def start_gateway(self, *, memory: bool = False, **extra: str) -> Proc:
        if self.redis and "REDIS_URL" not in self.env:
            self.start_redis()
        env = {**self.env, "SAGA_ENV": "test", **extra}  # test mode: memory is allowed
        if memory:
            env["SAGA_LOG_BACKEND"] = "memory"
        self.gateway = self._saga("gateway", ["gateway"], env)
        self.gateway.wait_ready(lambda: http_ok(self.url + "/healthz"))
        return self.gateway

    def start_recovery(self, **extra: str) -> Proc:
        port = free_port()
        env = {**self.env, "RECOVERY_METRICS_ADDR": f"127.0.0.1:{port}", **extra}
        self.daemon = self._saga("recovery", ["recovery"], env)
        self.daemon.wait_ready(lambda: tcp_open("127.0.0.1", port))
        return self.daemon

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
