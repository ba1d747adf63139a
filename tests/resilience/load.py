"""A load of real orders against a gateway that may die at any moment.

Clients behave as the contract asks of them: every order has its own idempotency key,
and a POST that got no answer (connection refused or reset, a 503) is sent again with the
same key until it gets its 201; with several gateways, each order starts at one of them
and is sent again to the next one. Every call is recorded (tests/support/history.py, in the
stack's data folder) and `judge_run` hands the history to the one judge of the fault
tests: every order a client was given ends CONFIRMED or CANCELLED, one key never made two
orders, each effect happened once, and the contract's invariants hold.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.history import History, Recorder, Verdict, judge, observe
from tests.support.procs import SagaProcess
from tests.support.stack import Stack

BODIES = (
    {"product_id": "prod_1", "quantity": 1, "price": 50.00},  # confirmed
    {"product_id": "prod_1", "quantity": 2, "price": 300.00},  # declined: 600.00
    {"product_id": "prod_3", "quantity": 1, "price": 5.00},  # out of stock
)


@dataclass
class LoadResult:
    accepted: dict[str, str] = field(default_factory=dict)  # key -> order id (from 201s)
    replays: int = 0  # 201s with Idempotent-Replayed: true
    retries: int = 0  # POSTs sent again after no answer
    kills: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def post_until_accepted(
    urls: Sequence[str],
    key: str,
    body: dict[str, object],
    result: LoadResult,
    deadline: float,
    recorder: Recorder,
) -> None:
    """POST until a 201, trying the gateways at `urls` in turn (from the first)."""
    with contextlib.ExitStack() as clients:
        https = [clients.enter_context(httpx.Client(base_url=u, timeout=10.0)) for u in urls]
        for attempt in itertools.count():
            http = https[attempt % len(https)]
            resp = recorder.post(http, "load", key, body)
            if resp is not None and resp.status_code == 201:
                with result.lock:
                    previous = result.accepted.setdefault(key, resp.json()["id"])
                    assert previous == resp.json()["id"], f"key {key} gave two order ids"
                    result.replays += resp.headers.get("Idempotent-Replayed") == "true"
                return
            assert resp is None or resp.status_code == 503, (resp.status_code, resp.text)
            assert time.monotonic() < deadline, f"order {key} never accepted"
            with result.lock:
                result.retries += 1
            time.sleep(0.05)


def run_load(
    stack: Stack,
    orders: int,
    *,
    workers: int = 16,
    prefix: str = "load",
    during: Callable[[threading.Event, LoadResult], None] | None = None,
    timeout_s: float = 240.0,
    urls: Sequence[str] = (),
) -> LoadResult:
    """Send `orders` orders from `workers` threads; `during(done, result)` runs beside them
    (in its own thread) until `done` is set, e.g. a killer of processes. `urls`: the
    gateways to spread the orders over (default: the stack's)."""
    urls = urls or (stack.url,)
    result = LoadResult()
    done = threading.Event()
    side = None
    if during is not None:
        side = threading.Thread(target=during, args=(done, result), daemon=True)
        side.start()
    deadline = time.monotonic() + timeout_s
    rnd = random.Random(orders)
    recorder = Recorder(history_path(stack))
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(
                    post_until_accepted, [*urls[i % len(urls):], *urls[:i % len(urls)]],
                    f"{prefix}-{i}",
                    {"customer_id": f"cust_{i % 7}", "items": [rnd.choice(BODIES)]},
                    result, deadline, recorder,
                )
                for i in range(orders)
            ]  # fmt: skip
            for f in futures:
                f.result()
    finally:
        recorder.close()
    done.set()
    if side is not None:
        side.join(60)
        assert not side.is_alive(), "the side thread outlived the load by a minute"
    return result


def history_path(stack: Stack) -> Path:
    """Where every `run_load` on this stack records its calls (appended, one file)."""
    return stack.data / "history.jsonl"


def judge_run(stack: Stack, *, settle_s: float = 60.0, url: str | None = None) -> Verdict:
    """The history of every load on this stack, judged against the state it ended in, once
    running sagas have finished (up to `settle_s`); the gateway must be up to be asked
    (the stack's, or the one at `url`)."""
    history = History.read(history_path(stack))
    gateway = url or stack.url
    final = observe(gateway, stack.log_settings, stack.addresses, history, settle_s=settle_s)
    return judge(history, final)


def kill_in_turn(
    victims: Sequence[SagaProcess],
    every_s: tuple[float, float],
    seed: int,
    *,
    first_at: int | None = None,
) -> Callable[[threading.Event, LoadResult], None]:
    """A `during` for `run_load`: SIGKILL each victim in turn, `every_s` apart, and start
    it again after a short pause. The plan runs to its end even once the clients have all
    had their 201s (their sagas are still running then), so a run makes the same kills on a
    fast machine as on a slow one; a killer that stopped with the clients made fewer kills
    the faster the machine. With `first_at`, the first kill comes once that many orders
    have their 201 instead of after a delay: mid-load however fast the machine is."""
    rnd = random.Random(seed)

    def killer(done: threading.Event, result: LoadResult) -> None:
        for i, proc in enumerate(victims):
            if i == 0 and first_at is not None:
                while len(result.accepted) < first_at and not done.wait(0.005):
                    pass
            else:
                time.sleep(rnd.uniform(*every_s))
            proc.kill()
            with result.lock:
                result.kills += 1
            time.sleep(rnd.uniform(0.0, 0.3))
            proc.start()

    return killer
