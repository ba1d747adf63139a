"""`python -m bench.explorer` on a small log: it fills one, serves the real app on it, and
every page it times answers as it should (the numbers in docs/explorer.md come from it at a
million sagas)."""

from __future__ import annotations

import time
from pathlib import Path

from bench.explorer import fill, measure, pages_for

SAGAS = 3_000


async def test_the_explorer_benchmark_times_every_page(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"
    fill(path, SAGAS, time.time_ns() // 1_000_000)
    timings = await measure(path, pages_for(SAGAS), repeat=1)
    statuses = {t.page: t.status for t in timings}
    assert statuses.pop("unknown saga (404)") == 404
    assert statuses.pop("bad filter (400)") == 400
    assert set(statuses.values()) == {200}, statuses
    assert all(t.median_ms > 0 for t in timings)
