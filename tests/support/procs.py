"""Real processes for tests: start `python -m saga ...`, wait until it is ready, SIGKILL it,
start it again on the same data. Meant for every suite that kills things (services,
gateway, recovery).

    with start_service("inventory", tmp_path / "data", free_port()) as inv:
        ...                    # inv.address is "127.0.0.1:PORT", gRPC health is SERVING
        inv.kill()             # a real SIGKILL
        inv.restart()          # same command, env and log file; waits until ready again

    proc = SagaProcess(["gateway"], env, tmp_path / "gateway.log", ready=lambda: tcp_open(...))
    with proc.start(): ...

Every process started here runs in its own session, writes stdout and stderr to its log
file, and is killed when its `with` block ends; `kill_all()` (also run at interpreter exit)
kills whatever a failing test left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "ProcessFailed",
    "SagaProcess",
    "ServiceProcess",
    "base_env",
    "free_port",
    "grpc_serving",
    "kill_all",
    "start_service",
    "tcp_open",
]

SERVICE_ADDR_VARS: Final = {
    "order": "ORDER_SERVICE_ADDR",
    "payment": "PAYMENT_SERVICE_ADDR",
    "inventory": "INVENTORY_SERVICE_ADDR",
}
# Variables of the project that a developer's shell may have set; a test says what it means.
_PROJECT_VARS: Final = (
    "REDIS_URL",
    "HTTP_ADDR",
    "RECOVERY_METRICS_ADDR",
    "INVENTORY_SEED_STOCK",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    *SERVICE_ADDR_VARS.values(),
)

_LIVE: set[SagaProcess] = set()


class ProcessFailed(RuntimeError):
    """A process exited or did not get ready in time; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def grpc_serving(address: str, service: str = "", timeout: float = 0.5) -> bool:
    """One gRPC health check: True when `service` ("" = the server) is SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def base_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the project's settings (SAGA_*, *_ADDR, …),
    plus `overrides`: a child sees only what the test sets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SAGA_") and key not in _PROJECT_VARS
    }
    env["PYTHONUNBUFFERED"] = "1"
    # Metrics endpoints on free ports, so that tests never collide on the defaults.
    for var in ("ORDER_METRICS_ADDR", "PAYMENT_METRICS_ADDR", "INVENTORY_METRICS_ADDR"):
        env[var] = "127.0.0.1:0"
    env.update(overrides)
    return env


class SagaProcess:
    """One `python -m saga ARGS...` child process, restartable, killed at teardown."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        ready: Callable[[], bool],
        *,
        cwd: Path | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.args = tuple(args)
        self.env = dict(env)
        self.log_path = log_path
        self.ready = ready
        self.cwd = cwd or log_path.parent
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return "saga " + " ".join(self.args)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def output(self) -> str:
        """Everything the process (and its earlier runs) wrote to stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *, wait: bool = True) -> Self:
        """Spawn the process; with `wait`, return once `ready()` is true."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {self.name}: start at {time.time():.3f}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "saga", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a SIGKILL of the test runner's group spares it
            )
        _LIVE.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            code = self.returncode
            if code is not None:
                raise ProcessFailed(f"{self.name} exited with {code}:\n{self._tail()}")
            if self.ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ProcessFailed(f"{self.name} was not ready in time:\n{self._tail()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own; its exit code."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self._proc.wait(timeout)
        _LIVE.discard(self)
        return code

    def kill(self) -> int | None:
        """SIGKILL (no clean-up of any kind in the child), then reap it. Its exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
        code = self._proc.wait()
        _LIVE.discard(self)
        return code

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; SIGKILL after `timeout`. Its exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()

    def restart(self, *, wait: bool = True) -> Self:
        """SIGKILL if still running, then start again with the same command, env and log."""
        self.kill()
        return self.start(wait=wait)

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class ServiceProcess(SagaProcess):
    """`saga service NAME`, ready when its gRPC health check says SERVING."""

    def __init__(
        self, name: str, env: Mapping[str, str], log_path: Path, host: str, port: int
    ) -> None:
        self.service = name
        self.host = host
        self.port = port
        super().__init__(["service", name], env, log_path, lambda: grpc_serving(self.address))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def start_service(
    name: str,
    data_dir: Path,
    port: int,
    extra_env: Mapping[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    wait: bool = True,
) -> ServiceProcess:
    """Start `saga service NAME` on host:port with its ledger in `data_dir`, and (with
    `wait`) return once it is SERVING. The log goes to `data_dir/NAME.log` by default."""
    env = base_env(SAGA_DATA_DIR=str(data_dir), **{SERVICE_ADDR_VARS[name]: f"{host}:{port}"})
    env.update(extra_env or {})
    proc = ServiceProcess(name, env, log_path or data_dir / f"{name}.log", host, port)
    return proc.start(wait=wait)


def kill_all() -> None:
    """SIGKILL every process started here that is still alive."""
    for proc in list(_LIVE):
        proc.kill()


atexit.register(kill_all)
