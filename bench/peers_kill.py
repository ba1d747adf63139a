"""The kill -9 half of `bench peers` (issue 18): each orchestrator (this project's
gateway, DBOS's app process, Restate's server) SIGKILLed in the middle of the load and
started again on the same port and data, while bench/retry_load.py keeps sending and
retries every failed POST with its idempotency key.

Afterwards, once every saga has had time to end, two counts, which must both be 0:
- acknowledged orders that never end: an id an acknowledgement named that the peer does
  not have, or has in a status that is not terminal;
- keys answered twice: every acknowledged key is POSTed once more, and a key whose
  answer names another id counts; so does each order the peer recorded beyond one per
  key sent (a retry that made a second order).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from bench.errors import BenchError
from bench.measure import SETTLE_S
from bench.orchestrators import Orchestrator
from bench.report import markdown_table
from bench.retry_load import Acked, RetryLoad, post_once

__all__ = ["KILL_HEADER", "KillRun", "kill_table", "measure_kill"]


@dataclass(frozen=True, slots=True)
class KillRun:
    peer: str
    rep: int
    acked: int = 0
    failed_posts: int = 0  # POSTs not acknowledged, each retried with its key
    abandoned: int = 0  # keys never acknowledged
    never_ended: int = 0
    answered_twice: int = 0
    extra_orders: int = 0  # orders recorded beyond one per key sent
    restart_s: float = 0.0  # SIGKILL to ready again
    error: str | None = None


def _replay(peer: Orchestrator, acked: Acked) -> int:
    """Keys whose second POST names another id than their first acknowledgement."""
    twice = 0
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=10)
    try:
        for key, first in acked.ids.items():
            again = post_once(conn, peer.path, peer.key_header, key, peer.accepted_status)
            twice += again is not None and again != first
    finally:
        conn.close()
    return twice


def measure_kill(
    peer: Orchestrator, name: str, rep: int, duration_s: float, concurrency: int
) -> KillRun:
    """The load for `duration_s`, the orchestrator SIGKILLed and restarted half-way."""
    if peer.ids is None:
        raise BenchError(f"{name} cannot list its orders")
    load = RetryLoad(
        peer.port, peer.path, peer.key_header, peer.accepted_status, concurrency, f"k{rep}"
    ).start()
    time.sleep(duration_s / 2)
    t0 = time.perf_counter()
    peer.kill_and_restart()
    restart_s = time.perf_counter() - t0
    time.sleep(duration_s / 2)
    acked = load.stop()
    settled = peer.settled(len(acked.ids), SETTLE_S)
    recorded = peer.ids()
    never = sum(1 for i in acked.ids.values() if recorded.get(i) not in peer.terminal)
    run = KillRun(
        name,
        rep,
        acked=len(acked.ids),
        failed_posts=acked.failed_posts,
        abandoned=len(acked.abandoned),
        never_ended=never,
        answered_twice=_replay(peer, acked),
        extra_orders=max(0, len(recorded) - len(acked.tried)),
        restart_s=restart_s,
    )
    if not settled:
        return replace(run, error=f"sagas not terminal {SETTLE_S:g}s after the load")
    return run


KILL_HEADER: Final = (
    "peer",
    "rep",
    "orders acknowledged",
    "failed POSTs (retried)",
    "keys abandoned",
    "acknowledged, never ended",
    "keys answered twice",
    "orders beyond one per key",
    "kill to ready (s)",
)


def kill_table(runs: Sequence[KillRun]) -> str:
    cells = [
        [
            r.peer,
            str(r.rep),
            f"{r.acked:,}",
            f"{r.failed_posts:,}",
            str(r.abandoned),
            f"**{r.never_ended}**",
            f"**{r.answered_twice}**",
            str(r.extra_orders),
            f"{r.restart_s:.1f}",
        ]
        if r.error is None
        else [r.peer, str(r.rep), f"failed: {r.error}", *([""] * 6)]
        for r in runs
    ]
    return markdown_table(KILL_HEADER, cells)
