"""Child processes of `saga up`, the benchmarks and the tests: `python -m saga ARGS` (or any
command) in its own session, its output in a log file or shared with ours; whether it is
alive, a SIGKILL, the end of its log, waiting until it is ready, and what it costs (CPU
seconds and resident memory, from /proc).

    child = Child.saga(["gateway"], env, log_path=root / "gateway.log")
    child.wait_ready(lambda: http_ok(url + "/healthz"))   # ChildFailed with its log if not
    child.kill()

`base_env` is the environment for such a child without the project's settings a
developer's shell may hold, so that a child sees only what its caller sets.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from saga.errors import CliError

__all__ = ["CLOCK_TICKS", "SERVICE_ADDR_VARS", "Child", "ChildFailed", "base_env", "saga_argv"]

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# Where each participant service listens (and where the gateway finds it).
SERVICE_ADDR_VARS: Final = {
    "order": "ORDER_SERVICE_ADDR",
    "payment": "PAYMENT_SERVICE_ADDR",
    "inventory": "INVENTORY_SERVICE_ADDR",
}
# Settings without the SAGA_ prefix that a developer's shell may have set.
_PROJECT_VARS: Final = (
    "REDIS_URL",
    "HTTP_ADDR",
    "RECOVERY_METRICS_ADDR",
    "INVENTORY_SEED_STOCK",
    "ORDER_DATABASE_URL",
    "PAYMENT_DATABASE_URL",
    "INVENTORY_DATABASE_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    *SERVICE_ADDR_VARS.values(),
)


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


def saga_argv(args: Sequence[str]) -> list[str]:
    """`python -m saga ARGS` with this interpreter (the console script may not be on PATH)."""
    return [sys.executable, "-m", "saga", *args]


class ChildFailed(CliError):
    """A child exited or did not get ready in time; the message ends with its log."""


@dataclass(eq=False)
class Child:
    """One started child process. Without a log file it shares our stdout and stderr."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> Child:
        """Start `argv` in a session of its own: a Ctrl-C in a terminal or a SIGKILL of
        our process group reaches us only, and we decide what happens to the child.
        `die_with_parent`: the kernel SIGKILLs the child when we die, however we die (see
        `_die_with_parent`). `pass_fds`: our file descriptors it inherits (a listening
        socket), under the same numbers."""
        preexec = _die_with_parent(os.getpid()) if die_with_parent else None
        if log_path is None:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=tuple(pass_fds),
            )
        else:
            with log_path.open("ab") as log:  # appended: a restart keeps the earlier runs
                popen = subprocess.Popen(
                    list(argv),
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                    pass_fds=tuple(pass_fds),
                )
        return cls(name, popen, log_path)

    @classmethod
    def saga(
        cls,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        name: str | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> Child:
        """`python -m saga ARGS`, named "saga ARGS" unless `name` says otherwise."""
        name = name or " ".join(["saga", *args])
        return cls.spawn(
            name,
            saga_argv(args),
            env,
            log_path=log_path,
            cwd=cwd,
            die_with_parent=die_with_parent,
            pass_fds=pass_fds,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Its exit code once it has exited, else None."""
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def send(self, signum: int) -> None:
        """Send a signal, unless it has already exited (and been reaped)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; subprocess.TimeoutExpired if it still runs after `timeout`."""
        return self.popen.wait(timeout)

    def kill(self) -> int:
        """SIGKILL (no clean-up of any kind in the child), then reap it. Its exit code."""
        self.send(signal.SIGKILL)
        return self.popen.wait()

    def output(self) -> str:
        """Everything in its log file (earlier runs' too); "" without one."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Return once `ready()` is true. ChildFailed (with the end of its log) if it exits
        first, or if it is not ready within `timeout_s`: then it is killed as well."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.returncode
            if code is not None:
                raise ChildFailed(f"{self.name} exited with {code}:\n{self.tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ChildFailed(f"{self.name} was not ready in {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time it has used so far (/proc/PID/stat); nan once reaped."""
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


_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """What a child runs between fork and exec so that it dies with `parent`: Linux's
    PR_SET_PDEATHSIG. A supervisor killed with SIGKILL cannot stop its children, and
    children in sessions of their own would outlive it, holding its ports, so that the
    next supervisor could not start. If the parent died before the prctl, the child is
    already an orphan and exits at once. None where there is no such call."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: only called after

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm
