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
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from engine.net import TlsFiles
from saga.children import SERVICE_ADDR_VARS, Child, ChildFailed, base_env
from saga.probes import free_port, grpc_serving, http_ok, tcp_open

__all__ = [
    "SERVICE_ADDR_VARS",
    "ProcessFailed",
    "SagaProcess",
    "ServiceProcess",
    "base_env",
    "free_port",
    "grpc_serving",
    "http_ok",
    "kill_all",
    "start_service",
    "tcp_open",
]

# A process exited or did not get ready in time; the message ends with its log.
ProcessFailed = ChildFailed

_LIVE: set[SagaProcess] = set()


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
        self._child: Child | None = None

    @property
    def name(self) -> str:
        return "saga " + " ".join(self.args)

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.alive

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.returncode

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
        with self.log_path.open("ab") as log:  # where each run begins, in a shared log
            log.write(f"--- {self.name}: start at {time.time():.3f}\n".encode())
        self._child = Child.saga(
            self.args, self.env, name=self.name, log_path=self.log_path, cwd=self.cwd
        )
        _LIVE.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once `ready()` is true; ProcessFailed (with the log) if it exits first or
        is not ready in time (it is killed then)."""
        timeout_s = self.ready_timeout if timeout is None else timeout
        try:
            self._started().wait_ready(self.ready, timeout_s)
        except ChildFailed:
            _LIVE.discard(self)
            raise

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own; its exit code."""
        code = self._started().wait(timeout)
        _LIVE.discard(self)
        return code

    def send_signal(self, signum: int) -> None:
        self._started().send(signum)

    def kill(self) -> int | None:
        """SIGKILL (no clean-up of any kind in the child), then reap it. Its exit code."""
        if self._child is None:
            return None
        code = self._child.kill()
        _LIVE.discard(self)
        return code

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; SIGKILL after `timeout`. Its exit code."""
        if self._child is None:
            return None
        self._child.send(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def restart(self, *, wait: bool = True) -> Self:
        """SIGKILL if still running, then start again with the same command, env and log."""
        self.kill()
        return self.start(wait=wait)

    def _started(self) -> Child:
        if self._child is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._child

    def __enter__(self) -> Self:
        if self._child is None:
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
    """`saga service NAME`, ready when its gRPC health check says SERVING and it has printed
    its serving line (addresses of its ports), which comes just after. `probe_tls`: a
    caller's certificate for the health check of a service that serves mutual TLS."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        log_path: Path,
        host: str,
        port: int,
        probe_tls: TlsFiles | None = None,
    ) -> None:
        self.service = name
        self.host = host
        self.port = port
        self.probe_tls = probe_tls
        super().__init__(["service", name], env, log_path, self._ready)

    def _ready(self) -> bool:
        return (
            grpc_serving(self.address, tls=self.probe_tls)
            and f"{self.service} serving on" in self.output()
        )

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
    probe_tls: TlsFiles | None = None,
) -> ServiceProcess:
    """Start `saga service NAME` on host:port with its ledger in `data_dir`, and (with
    `wait`) return once it is SERVING. The log goes to `data_dir/NAME.log` by default."""
    env = base_env(SAGA_DATA_DIR=str(data_dir), **{SERVICE_ADDR_VARS[name]: f"{host}:{port}"})
    env.update(extra_env or {})
    log = log_path or data_dir / f"{name}.log"
    proc = ServiceProcess(name, env, log, host, port, probe_tls)
    return proc.start(wait=wait)


def kill_all() -> None:
    """SIGKILL every process started here that is still alive."""
    for proc in list(_LIVE):
        proc.kill()


atexit.register(kill_all)
