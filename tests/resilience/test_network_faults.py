"""A broken network: every process stays up, and the links between them misbehave.

The real stack runs as processes, with a fault proxy (tests/support/faultproxy.py) on
every link: the gateway and the recovery daemon reach each service and Redis through one,
and the clients reach the gateway through another. Under a load of orders with
idempotency keys (a client sends a call whose outcome it does not know again, with the
same key), each fault is applied to each link in turn for a few seconds and healed; and
a random schedule mixes them. Then the system settles and the history judge
(tests/support/history.py) compares what the clients saw with what the system ended with.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.resilience.conftest import soak_scale
from tests.resilience.load import BODIES
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.history import History, Recorder, Verdict, judge, observe
from tests.support.procs import SERVICE_ADDR_VARS
from tests.support.stack import PLENTY, Redis, Stack

STEP_TIMEOUT_S: Final = 1.0
SHORT: Final = {
    "SAGA_STEP_TIMEOUT_S": str(STEP_TIMEOUT_S),
    "SAGA_LEASE_S": "2",
    "INVENTORY_SEED_STOCK": PLENTY,
}
# Per phase; a whole call is bounded by their sum (6 s), which the judge checks.
CLIENT_TIMEOUT: Final = httpx.Timeout(2.0, connect=1.0, pool=1.0)
# From the saga's last call to its first: a dead link starves the ones after it (a black
# hole stays until the caller's keepalive finds it, ~15 s), so each is faulted while the
# ones before it work.
LINKS: Final = ("payment", "inventory", "order", "redis", "gateway")
# The fault each test applies to each link in turn, and what it must have done there.
FAULTS: Final[Mapping[Mode, tuple[dict[str, Any], str]]] = {
    Mode.LATENCY: ({"delay_s": STEP_TIMEOUT_S * 1.5}, "delayed"),  # past the step timeout
    Mode.BLACKHOLE: ({}, "swallowed"),
    Mode.RESET: ({}, "resets"),
    Mode.REFUSE: ({}, "resets"),
}


@dataclass
class Net:
    stack: Stack
    # The gateway's and the daemon's way to each service and to Redis, and ("gateway") the
    # clients' way to the gateway.
    links: dict[str, FaultProxy]
    recorder: Recorder  # every client call, as JSON lines

    @property
    def url(self) -> str:
        return f"http://{self.links['gateway'].address}"

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def verdict(self, settle_s: float = 60.0) -> Verdict:
        self.heal()
        history = History.read(self.recorder.path)
        outcome = observe(
            self.stack.url, self.stack.log_path, self.stack.addresses, history, settle_s=settle_s
        )
        return judge(history, outcome)


def open_net(
    tmp_path: Path,
    cleanup: contextlib.ExitStack,
    *,
    gateway_env: Mapping[str, str] | None = None,
    daemon_env: Mapping[str, str] | None = None,
) -> Net:
    """The stack with a fault proxy on every link (closed by `cleanup`); `gateway_env` and
    `daemon_env` are added to the gateway's and the daemon's environments."""
    redis = Redis(tmp_path)
    cleanup.callback(redis.kill)
    stack = Stack.create(tmp_path, **SHORT)
    cleanup.callback(stack.close)
    stack.start_services()

    def link(name: str, port: int, http2: bool) -> FaultProxy:
        return cleanup.enter_context(FaultProxy(port, http2=http2, name=name))

    links = {
        name: link(name, int(stack.env[var].rsplit(":", 1)[1]), True)
        for name, var in SERVICE_ADDR_VARS.items()
    }
    links["redis"] = link("redis", redis.port, False)
    via = {var: links[name].address for name, var in SERVICE_ADDR_VARS.items()}
    redis_url = f"redis://{links['redis'].address}/0"
    stack.start_gateway(env={**via, "REDIS_URL": redis_url, **(gateway_env or {})})
    stack.recovery({**via, "SAGA_RECOVERY_INTERVAL_S": "0.5", **(daemon_env or {})})
    links["gateway"] = link("gateway", stack.port, False)
    recorder = Recorder(tmp_path / "history.jsonl")
    cleanup.callback(recorder.close)
    return Net(stack, links, recorder)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    with contextlib.ExitStack() as cleanup:
        yield open_net(tmp_path, cleanup)


# ---- the clients ---------------------------------------------------------------------------


def run_clients(
    net: Net, orders: int, over_s: float, *, workers: int = 8, retry_for_s: float = 30.0
) -> list[threading.Thread]:
    """Start `orders` orders spread evenly over `over_s` seconds from `workers` threads.
    A client sends an order again with its key until it gets its 201 (or gives up
    `retry_for_s` after the load's end); every call is recorded. Returns the threads."""
    start = time.monotonic()
    give_up = start + over_s + retry_for_s
    rnd = random.Random(orders)
    bodies = [
        {"customer_id": f"cust_{i % 7}", "items": [rnd.choice(BODIES)]} for i in range(orders)
    ]

    def client(n: int) -> None:
        with httpx.Client(base_url=net.url, timeout=CLIENT_TIMEOUT) as http:
            for i in range(n, orders, workers):
                time.sleep(max(0.0, start + i * over_s / orders - time.monotonic()))
                key = f"net-{i}"
                while True:
                    resp = net.recorder.post(http, f"client-{n}", key, bodies[i])
                    definite = resp is not None and resp.status_code != 503
                    if definite or time.monotonic() > give_up:
                        break  # a 201, or an answer the judge will find wrong
                    time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(workers)]
    for t in threads:
        t.start()
    return threads


def wait_clients(threads: Sequence[threading.Thread], within_s: float) -> None:
    """Bounded: a client still stuck leaves a call without completion, which the judge
    reports as a hang."""
    deadline = time.monotonic() + within_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


# ---- the faults ----------------------------------------------------------------------------


def each_link_in_turn(net: Net, mode: Mode, hold_s: float, gap_s: float) -> None:
    kwargs, _ = FAULTS[mode]
    for name in LINKS:
        net.links[name].set(mode, **kwargs)
        time.sleep(hold_s)
        net.links[name].heal()
        time.sleep(gap_s)


def random_schedule(net: Net, seed: int, for_s: float) -> list[str]:
    """Random faults on random links (sometimes two at once) for `for_s` seconds; the
    schedule, as run, for the failure message."""
    rnd = random.Random(seed)
    ran: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < for_s:
        hit = rnd.sample(LINKS, rnd.choice((1, 1, 2)))
        for name in hit:
            mode = rnd.choice(list(FAULTS))
            kwargs = dict(FAULTS[mode][0])
            if mode is Mode.LATENCY:
                kwargs["delay_s"] = rnd.choice((0.3, STEP_TIMEOUT_S * 1.5, 3.0))
                kwargs["per_connection"] = rnd.random() < 0.25
            net.links[name].set(mode, **kwargs)
            ran.append(f"{time.monotonic() - started:5.1f}s {name}: {mode} {kwargs or ''}")
        time.sleep(rnd.uniform(0.5, 2.5))
        for name in hit:
            net.links[name].heal()
        time.sleep(rnd.uniform(0.0, 0.5))
    return ran


def judged(net: Net, verdict: Verdict, schedule: Sequence[str] = ()) -> str:
    stats = {name: dict(p.stats) for name, p in net.links.items()}
    return "\n".join([verdict.report(), f"proxies: {stats}", *schedule])


# ---- the tests -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(FAULTS))
def test_each_fault_on_each_link_in_turn(net: Net, mode: Mode) -> None:
    """Latency past the step timeout, a black hole, replies lost after the call ran, and
    refused connections: on each service's link, Redis's and the clients', 2.5 s each."""
    hold_s, gap_s = 2.5, 0.5
    over_s = 1.0 + len(LINKS) * (hold_s + gap_s)
    clients = run_clients(net, orders=150, over_s=over_s)
    time.sleep(1.0)
    each_link_in_turn(net, mode, hold_s, gap_s)
    wait_clients(clients, within_s=60)
    verdict = net.verdict()
    print(judged(net, verdict))
    assert verdict.ok, judged(net, verdict)
    _, bit = FAULTS[mode]
    missed = [name for name, proxy in net.links.items() if not proxy.stats[bit]]
    assert not missed, f"{mode} did nothing on {missed}: the test tested nothing there"


@pytest.mark.slow
def test_a_random_schedule_of_faults(net: Net) -> None:
    clients = run_clients(net, orders=200, over_s=16.0)
    schedule = random_schedule(net, seed=11, for_s=15.0)
    wait_clients(clients, within_s=60)
    verdict = net.verdict()
    print(judged(net, verdict, schedule))
    assert verdict.ok, judged(net, verdict, schedule)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_random_faults_for_minutes(net: Net) -> None:
    """SAGA_SOAK_SCALE x 30 s of random faults (5 minutes by default) under a steady load."""
    for_s = 30.0 * soak_scale()
    clients = run_clients(net, orders=int(12 * for_s), over_s=for_s + 1, workers=16)
    schedule = random_schedule(net, seed=soak_scale(), for_s=for_s)
    wait_clients(clients, within_s=120)
    verdict = net.verdict(settle_s=300)
    print(judged(net, verdict, schedule[-20:]))
    assert verdict.ok, judged(net, verdict, schedule)
