"""`saga prune` on a live system: orders made over HTTP by a running gateway, their
history pruned while it runs; every order still reads, replays and audits as before, and
a finished saga stays finished to every operator action."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.core import Phase
from tests.ops.helpers import assert_error_line, record, run_saga
from tests.support.procs import kill_all
from tests.support.stack import Stack, wait_terminal

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def body(product: str, price: int) -> bytes:
    item = {"product_id": product, "quantity": 1, "price": price}
    return json.dumps({"customer_id": "c", "items": [item]}).encode()


# The three paths: confirmed, declined (over 500.00), out of stock.
BODIES = {
    "p-ok": body("prod_1", 50),
    "p-declined": body("prod_1", 600),
    "p-short": body("prod_3", 1),
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path)
    s.start_services()
    s.start_gateway()
    yield s
    kill_all()


def post(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/orders", content=BODIES[key], headers={**JSON, "X-Idempotency-Key": key})


def test_prune_keeps_every_order_whole_on_a_live_system(stack: Stack) -> None:
    with stack.client() as client:
        made = {key: post(client, key) for key in BODIES}
        assert {r.status_code for r in made.values()} == {201}
        ids = {key: r.json()["id"] for key, r in made.items()}
        ended = {key: wait_terminal(client, oid) for key, oid in ids.items()}
        assert [ended[k]["status"] for k in BODIES] == ["CONFIRMED", "CANCELLED", "CANCELLED"]
        before = {oid: record(stack.log_path, oid) for oid in ids.values()}

        dry = run_saga("prune", "--older-than", "0s", "--dry-run", env=stack.env)
        assert dry.code == 0, dry
        assert "would prune the history of 3 sagas" in dry.out
        assert {oid: record(stack.log_path, oid) for oid in ids.values()} == before

        young = run_saga("prune", "--older-than", "1h", env=stack.env)
        assert young.code == 0 and "pruned the history of 0 sagas" in young.out, young

        ran = run_saga("prune", "--older-than", "0s", "--batch", "2", env=stack.env)
        assert ran.code == 0, ran
        deleted = sum(len(ts) - 1 for _, ts in before.values())
        assert "pruned the history of 3 sagas finished before " in ran.out
        assert f": {deleted} transitions deleted" in ran.out

        for key, oid in ids.items():
            rec, kept = record(stack.log_path, oid)
            assert rec == before[oid][0], "the record is untouched"
            assert kept == before[oid][1][-1:], "only the final transition is kept"
            assert kept[0].phase in (Phase.COMPLETED, Phase.COMPENSATED)
            assert client.get(f"/orders/{oid}").json() == ended[key]
            saga = client.get(f"/sagas/{oid}").json()
            assert saga["history_pruned"] is True and len(saga["steps"]) == 1
            replay = post(client, key)
            assert replay.status_code == 201 and replay.json() == ended[key]
            assert replay.headers["idempotent-replayed"] == "true"

        shown = run_saga("show", ids["p-ok"], env=stack.env)
        assert "history   pruned: transitions 1-" in shown.out, shown
        doc = json.loads(run_saga("show", ids["p-ok"], "--json", env=stack.env).out)
        assert doc["history_pruned"] is True and doc["next"]["action"] == "nothing"
        assert_error_line(run_saga("cancel", ids["p-ok"], env=stack.env), "saga_finished", code=3)
        assert_error_line(run_saga("retry", ids["p-short"], env=stack.env), "not_parked", code=3)

        # The system goes on: a new order after the prune runs its whole saga.
        fresh = client.post("/orders", content=BODIES["p-ok"], headers=JSON).json()
        assert wait_terminal(client, fresh["id"])["status"] == "CONFIRMED"
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--older-than", "30"), "--older-than '30'"),
        (("--older-than", "-1d"), "--older-than '-1d'"),
        (("--older-than", "1d", "--batch", "0"), "--batch 0"),
    ],
)
def test_prune_refuses_bad_input_in_one_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    s = Stack.create(tmp_path)
    assert_error_line(run_saga("prune", *args, env=s.env), says)
