"""Two `saga gateway` processes and one `saga recovery` sharing one PostgreSQL saga log
(real processes on loopback): a POST retried with the same key on the other gateway gets
the same order; one gateway SIGKILLed mid-load has its sagas finished by the others;
every acknowledged order ends and `saga audit` finds every invariant holding. The
operator commands read the same log."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.ops.helpers import run_saga
from tests.resilience.load import BODIES
from tests.support.procs import SagaProcess, free_port, http_ok
from tests.support.stack import PLENTY, Stack, wait_terminal

ORDERS = 120
WORKERS = 8
KILL_AFTER = ORDERS // 3  # acknowledged orders before the first gateway is SIGKILLed


@pytest.fixture
def stack(tmp_path: Path, pg_url: str) -> Iterator[Stack]:
    s = Stack.create(
        tmp_path, SAGA_DATABASE_URL=pg_url, SAGA_LEASE_S="1", INVENTORY_SEED_STOCK=PLENTY
    )
    yield s
    s.close()


def _second_gateway(stack: Stack) -> tuple[SagaProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = SagaProcess(
        ["gateway"],
        {**stack.env, "HTTP_ADDR": f"127.0.0.1:{port}"},
        stack.data / "gateway2.log",
        ready=lambda: http_ok(url + "/healthz"),
    )
    proc.start()
    return proc, url


def _body(i: int) -> dict[str, object]:
    return {"customer_id": f"cust_{i % 5}", "items": [random.Random(i).choice(BODIES)]}


class _Load:
    """Clients as the contract asks: a POST with no answer (refused, reset, 503) is sent
    again with the same key, here to the next gateway in turn."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.accepted: dict[str, str] = {}
        self.lock = threading.Lock()

    def place(self, i: int, deadline: float) -> None:
        key = f"load-{i}"
        for url in itertools.islice(itertools.cycle(self.urls), i % 2, None):
            try:
                resp = httpx.post(
                    url + "/orders", json=_body(i), headers={"Idempotency-Key": key}, timeout=10
                )
            except httpx.TransportError:
                resp = None
            if resp is not None and resp.status_code == 201:
                with self.lock:
                    previous = self.accepted.setdefault(key, resp.json()["id"])
                assert previous == resp.json()["id"], f"key {key} gave two order ids"
                return
            assert resp is None or resp.status_code == 503, (resp.status_code, resp.text)
            assert time.monotonic() < deadline, f"order {key} never accepted"
            time.sleep(0.05)


async def _taken_over(url: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval(
            "SELECT count(DISTINCT s.id) FROM saga_log.sagas s JOIN saga_log.transitions t "
            "ON t.saga_seq = s.seq WHERE t.phase = 'claimed' AND s.id = ANY($1::text[])",
            ids,
        )
    finally:
        await conn.close()
    return int(value)


def test_two_gateways_and_a_daemon_share_one_log(stack: Stack, pg_url: str) -> None:
    # Each call takes a while, so that the first gateway has sagas in flight when it dies.
    stack.start_services({"SAGA_FAULTS": "*:latency_ms:100"})
    first = stack.start_gateway()
    second, second_url = _second_gateway(stack)
    stack.recovery()

    # The same request, retried on the other gateway with its key: the same order.
    body = _body(0)
    one = httpx.post(stack.url + "/orders", json=body, headers={"Idempotency-Key": "k"})
    two = httpx.post(second_url + "/orders", json=body, headers={"Idempotency-Key": "k"})
    assert one.status_code == two.status_code == 201, (one.text, two.text)
    assert one.json()["id"] == two.json()["id"]
    assert two.headers.get("Idempotent-Replayed") == "true"

    load = _Load([stack.url, second_url])
    deadline = time.monotonic() + 180

    def kill_first() -> None:
        while len(load.accepted) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.01)
        first.kill()  # SIGKILL: its sagas in flight stop where they are

    killer = threading.Thread(target=kill_first, daemon=True)
    killer.start()
    with ThreadPoolExecutor(WORKERS) as pool:
        for f in [pool.submit(load.place, i, deadline) for i in range(1, ORDERS + 1)]:
            f.result()
    killer.join(10)
    assert not first.running
    assert len(load.accepted) == ORDERS

    with httpx.Client(base_url=second_url, timeout=10) as client:
        for order_id in [one.json()["id"], *load.accepted.values()]:
            assert wait_terminal(client, order_id, within_s=60)["status"] in (
                "CONFIRMED",
                "CANCELLED",
            )
    ids = list(load.accepted.values())
    assert asyncio.run(_taken_over(pg_url, ids)) > 0, "the kill cut sagas short"

    audit = run_saga("audit", env=stack.env)
    assert audit.code == 0, audit
    assert f"audited {ORDERS + 1} orders" in audit.out
    assert "all invariants hold" in audit.out

    listed = run_saga("ls", "--status", "RUNNING", env=stack.env)
    assert listed.code == 0, listed
    assert listed.out.strip() == "no sagas match", listed.out  # every saga above ended
    shown = run_saga("show", ids[0], env=stack.env)
    assert shown.code == 0, shown
    assert ids[0] in shown.out
    second.kill()
