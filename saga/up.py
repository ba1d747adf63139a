"""`saga up`: a small supervisor that runs the whole stack as child processes.

Each child is `python -m saga <command>` with the same environment. A child that dies on
its own is started again after a growing pause (its state is on disk, so a restart is
just recovery). A child that cannot start at all (exit code 2 on its first run: a bad
setting, a port in use, an unusable file, said in one `saga: error:` line) stops the
whole stack with that code instead: restarting it would print the same line forever.
SIGINT/SIGTERM sends SIGTERM to every child, waits for them to stop, and SIGKILLs
whatever is still running after the grace period. A supervisor killed outright (SIGKILL)
takes its children with it: for the system that is one more crash, recovered like any
other when the next `saga up` starts.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from engine.config import env_float
from engine.log_settings import SagaLogSettings
from engine.logging_setup import configure_logging
from saga.children import Child

log = logging.getLogger("saga.up")

# What every `saga` command exits with when it cannot do what it was asked as configured.
CANNOT_START = 2

# Started in this order: the participants first, so the gateway's first saga finds them.
STACK: tuple[tuple[str, ...], ...] = (
    ("service", "order"),
    ("service", "payment"),
    ("service", "inventory"),
    ("gateway",),
    ("recovery",),
)


@dataclass(frozen=True, slots=True)
class UpSettings:
    grace_s: float = 15.0
    restart_max_backoff_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UpSettings:
        # The children read the saga log's settings themselves; a mistake in them (a
        # malformed SAGA_DATABASE_URL) is one line here, before anything starts.
        SagaLogSettings.from_env(env)
        return cls(grace_s=env_float(env, "SAGA_UP_GRACE_S", 15.0))


@dataclass(slots=True)
class Supervised:
    """One command of the stack, and the child now running it (None while it waits out its
    restart pause)."""

    argv: tuple[str, ...]
    child: Child | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)
    ran_before: bool = False  # it has exited once: a later exit 2 may be passing

    @property
    def name(self) -> str:
        return " ".join(self.argv)


def _spawn(slot: Supervised, env: Mapping[str, str], pass_fds: Sequence[int] = ()) -> None:
    # Output shared with ours; its own session, so that a Ctrl-C in the terminal reaches
    # the supervisor only, which then stops the children in order instead of all of them
    # racing at once. If the supervisor itself is killed, the kernel kills the children:
    # left running, they would hold the ports the next `saga up` needs.
    slot.child = Child.saga(slot.argv, env, die_with_parent=True, pass_fds=pass_fds)
    slot.started_at = time.monotonic()
    log.info("started %s (pid %d)", slot.name, slot.child.pid)


def run_up(env: Mapping[str, str], stack: Sequence[tuple[str, ...]] = STACK) -> int:
    configure_logging("up")  # as its children: JSON lines, or SAGA_LOG_FORMAT=text
    settings = UpSettings.from_env(env)
    return supervise(stack, env, settings)


def supervise(
    stack: Sequence[tuple[str, ...]],
    env: Mapping[str, str],
    settings: UpSettings,
    *,
    pass_fds: Sequence[int] = (),
) -> int:
    """Run each `saga` command of `stack` as a child until SIGINT/SIGTERM, restarting the
    ones that die (see the module's docstring); `saga gateway` runs its workers with it
    too. The exit code: 0 after a stop, CANNOT_START if a child could not start."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping the stack", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    slots = [Supervised(tuple(argv)) for argv in stack]
    for slot in slots:
        _spawn(slot, env, pass_fds)
    while not stop.wait(0.2):
        now = time.monotonic()
        for slot in slots:
            if slot.child is None:
                if now >= slot.next_start:
                    _spawn(slot, env, pass_fds)
                continue
            code = slot.child.returncode
            if code is None:
                continue
            if code == CANNOT_START and not slot.ran_before:
                log.error("%s cannot start (its error is above); stopping the stack", slot.name)
                _stop_all(slots, settings.grace_s)
                return CANNOT_START
            slot.ran_before = True
            # A child that ran a while before dying gets a fresh backoff.
            if now - slot.started_at > 30:
                slot.restarts = 0
            slot.restarts += 1
            delay = min(settings.restart_max_backoff_s, 0.5 * 2 ** (slot.restarts - 1))
            log.warning("%s exited with %s; restarting in %.1fs", slot.name, code, delay)
            slot.child = None
            slot.next_start = now + delay
    return _stop_all(slots, settings.grace_s)


def _stop_all(slots: Sequence[Supervised], grace_s: float) -> int:
    running = [(s.name, s.child) for s in slots if s.child is not None and s.child.alive]
    # Gateway and daemon first (they drain and hand sagas back), then the services.
    for _, child in reversed(running):
        child.send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for name, child in running:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", name, grace_s)
            child.kill()
    log.info("stack stopped")
    return 0
