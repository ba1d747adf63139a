"""Redis is only the fast path: killed mid-load, flushed between replays, brought back,
the same keys never make a second order, and nothing answers 5xx."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resilience.load import LoadResult, judge_run, run_load
from tests.support.stack import PLENTY, Redis, Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack.create(tmp_path, INVENTORY_SEED_STOCK=PLENTY)
    yield s
    s.close()


def test_redis_killed_and_flushed_under_replays(stack: Stack, tmp_path: Path) -> None:
    redis = Redis(tmp_path)
    try:
        stack.env["REDIS_URL"] = redis.url
        # A generous budget per call: with the default 100 ms, one slow moment turns the
        # cache off for 2 s, long enough for the whole first load to miss it.
        stack.env["SAGA_REDIS_TIMEOUT_MS"] = "2000"
        stack.start_services()
        stack.start_gateway()
        first = run_load(stack, 120, prefix="k")
        assert redis.keys() > 0, "the fast path was used"
        flushed_and_killed = threading.Event()

        def chaos(done: threading.Event, result: LoadResult) -> None:
            redis.flushall()
            time.sleep(0.2)
            redis.kill()
            result.kills += 1
            flushed_and_killed.set()

        # The same 120 keys again (every one a replay), then 60 new ones, while Redis is
        # flushed and then killed under the load.
        again = run_load(stack, 120, prefix="k", during=chaos)
        assert flushed_and_killed.wait(30)
        more = run_load(stack, 60, prefix="new")
    finally:
        redis.kill()
    assert again.accepted == first.accepted, "a replayed key answers with its first order"
    assert again.replays == 120
    verdict = judge_run(stack, settle_s=60)
    assert verdict.ok, verdict.report()
    assert verdict.counts["orders"] == 180, "one key, one order: nothing made twice"
    assert len(more.accepted) == 60
