"""The soak: every kind of fault on a random schedule for N minutes under a steady load,
then one verdict. `scripts/soak --faults all --minutes 30` runs it (pytest -m soak).

Kinds (SAGA_SOAK_FAULTS, comma-separated, or `all`):
- kill: SIGKILL the gateway, the daemon or a service, and start it again;
- pause: SIGSTOP the gateway or the daemon past its lease, then SIGCONT (a zombie owner);
- network: a fault proxy on a random link misbehaves (latency, black hole, reply lost
  after the call ran, refused connections) for a moment;
- clock: the gateway's or the daemon's wall clock jumps (hours, a day, back and forth).

Each fault is logged with its time; the table printed at the end says, per kind, how many
were injected, how many client calls ran while one of that kind was active (the orders
it may have affected), and the violations the history judge found among those orders.
The only acceptable number in the last column is 0.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.resilience.test_network_faults import (
    FAULTS,
    LINKS,
    SHORT,
    Net,
    open_net,
    run_clients,
    wait_clients,
)
from tests.support.clocks import WallClock, faketime_preload
from tests.support.faultproxy import FaultProxy
from tests.support.history import History
from tests.support.procs import SagaProcess

KINDS: Final = ("kill", "pause", "network", "clock")
LEASE_S: Final = float(SHORT["SAGA_LEASE_S"])


def chosen_kinds() -> tuple[str, ...]:
    raw = os.environ.get("SAGA_SOAK_FAULTS", "all").strip()
    if raw == "all":
        return KINDS
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        pytest.fail(f"SAGA_SOAK_FAULTS={raw!r}: expected 'all' or some of {', '.join(KINDS)}")
    return kinds


def minutes() -> float:
    return float(os.environ.get("SAGA_SOAK_MINUTES", "5"))


@dataclass
class Window:
    kind: str
    what: str
    start: float
    end: float = float("inf")


@dataclass
class Soak:
    net: Net
    clocks: dict[str, WallClock]
    rnd: random.Random
    windows: list[Window] = field(default_factory=list)

    def procs(self) -> dict[str, SagaProcess]:
        stack = self.net.stack
        assert stack.gateway is not None
        found: dict[str, SagaProcess] = {"gateway": stack.gateway, "recovery": stack.daemons[0]}
        found.update(stack.services)
        return found

    @contextlib.contextmanager
    def window(self, kind: str, what: str) -> Iterator[None]:
        w = Window(kind, what, time.monotonic())
        self.windows.append(w)
        try:
            yield
        finally:
            w.end = time.monotonic()

    def kill(self) -> None:
        name, proc = self.rnd.choice(sorted(self.procs().items()))
        with self.window("kill", name):
            proc.kill()
            time.sleep(self.rnd.uniform(0.0, 0.5))
            proc.start()

    def pause(self) -> None:
        name = self.rnd.choice(("gateway", "recovery"))
        proc = self.procs()[name]
        with self.window("pause", name):
            proc.send_signal(signal.SIGSTOP)
            try:
                time.sleep(LEASE_S + self.rnd.uniform(0.5, 2.0))
            finally:
                proc.send_signal(signal.SIGCONT)

    def network(self) -> None:
        name = self.rnd.choice(LINKS)
        mode = self.rnd.choice(list(FAULTS))
        proxy: FaultProxy = self.net.links[name]
        with self.window("network", f"{name} {mode}"):
            proxy.set(mode, **FAULTS[mode][0])
            time.sleep(self.rnd.uniform(0.5, 2.5))
            proxy.heal()

    def clock(self) -> None:
        name = self.rnd.choice(sorted(self.clocks))
        offset = self.rnd.choice(("+1h", "-1h", "+2h", "-3h", "+1d", "+0"))
        with self.window("clock", f"{name} {offset}"):
            self.clocks[name].set(offset)
            time.sleep(self.rnd.uniform(1.0, 3.0))  # a clock left off for a while


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    clocks: dict[str, WallClock] = {}
    if "clock" in chosen_kinds():  # libfaketime only where it is wanted: it costs time
        preload = faketime_preload(tmp_path)
        clocks = {name: WallClock(tmp_path, name, preload) for name in ("gateway", "recovery")}
    with contextlib.ExitStack() as cleanup:
        net = open_net(
            tmp_path,
            cleanup,
            gateway_env=clocks["gateway"].env if clocks else None,
            daemon_env=clocks["recovery"].env if clocks else None,
        )
        yield Soak(net, clocks, random.Random(7))


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)
def test_soak_all_faults(soak: Soak) -> None:
    kinds = chosen_kinds()
    for_s = 60.0 * minutes()
    faults: dict[str, Callable[[], None]] = {k: getattr(soak, k) for k in kinds}
    clients = run_clients(soak.net, orders=int(10 * for_s), over_s=for_s + 1, workers=16)
    started = time.monotonic()
    while time.monotonic() - started < for_s:
        faults[soak.rnd.choice(kinds)]()
        time.sleep(soak.rnd.uniform(0.2, 1.5))
    for clock in soak.clocks.values():
        clock.set("+0")
    wait_clients(clients, within_s=180)
    verdict = soak.net.verdict(settle_s=600)
    print(table(kinds, soak.windows, History.read(soak.net.recorder.path), verdict.violations))
    assert verdict.ok, verdict.report()


def table(
    kinds: tuple[str, ...],
    windows: list[Window],
    history: History,
    violations: tuple[str, ...],
) -> str:
    """Per kind: faults injected, client calls made while one was active, and the judge's
    violations that name a key called then (a violation naming no key counts for all)."""
    injected = Counter(w.kind for w in windows)
    during: dict[str, set[str]] = {k: set() for k in kinds}
    calls = 0
    for call in history.calls():
        at, key = call.invoke.at, call.invoke.key
        for w in windows:
            if w.start <= at <= w.end and key is not None:
                during[w.kind].add(key)
        calls += 1
    lines = [
        f"\n{calls} client calls, {sum(injected.values())} faults",
        "| fault | injected | orders affected | violations |",
        "|---|--:|--:|--:|",
    ]
    for kind in kinds:
        keys = during[kind]
        mine = [v for v in violations if any(f"key {k}:" in v for k in keys)]
        unkeyed = [v for v in violations if "key " not in v]
        lines.append(f"| {kind} | {injected[kind]} | {len(keys)} | {len(mine) + len(unkeyed)} |")
    return "\n".join(lines)
