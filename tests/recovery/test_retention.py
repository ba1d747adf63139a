"""History retention in the recovery daemon (`SAGA_HISTORY_RETENTION`), as a real process:
it prunes the history of sagas it finished and of sagas that finish later, leaves
unfinished ones whole, and every invariant of the contract stays true."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.core import Phase, SagaStatus
from engine.saga_log import NewSaga, SagaFilter
from tests.ops.helpers import assert_error_line, run_saga
from tests.recovery.test_daemon import mixed, settled
from tests.support.procs import free_port
from tests.support.prom import scrape
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.slow

KEEP = {"SAGA_HISTORY_RETENTION": "1ms", "SAGA_PRUNE_INTERVAL_S": "0.2"}


def pruned(stack: Stack) -> set[str]:
    """The sagas that finished and have only their final transition left."""
    with stack.log() as log:
        page = log.list_sagas_sync(SagaFilter(), limit=1000)
        return {
            r.id for r in page.items if r.status.finished and len(log.transitions_sync(r.id)) == 1
        }


def test_the_daemon_prunes_what_finished_and_nothing_else(stack: Stack) -> None:
    stack.seed_sagas(mixed(30), owner=None)
    now = int(time.time() * 1000)
    with stack.log() as log:  # not claimable: a live owner holds it, as a busy gateway would
        held = NewSaga("held", "order", mixed(1)[0][1].to_payload())
        asyncio.run(
            log.create(held, owner="gateway@alive", lease_expires_ms=now + 3_600_000, now_ms=now)
        )
    daemon = stack.recovery(KEEP)
    seeded = [f"o-{i:04d}" for i in range(30)]
    wait_for(lambda: pruned(stack) == set(seeded))
    with stack.log() as log:
        assert [t.phase for t in log.transitions_sync("held")] == [Phase.CREATED], "untouched"
        ends = {log.transitions_sync(sid)[0].phase for sid in seeded}
        statuses = {r.status for r in map(log.get_sync, seeded) if r is not None}
    assert ends == {Phase.COMPLETED, Phase.COMPENSATED}
    assert statuses == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}

    # Its owner lets go: the daemon finishes it, and a later pass prunes it too.
    with stack.log() as log:
        assert asyncio.run(log.release("gateway@alive")) == 1
    report = stack.audit(wait_s=60)
    assert report.ok, [str(v) for v in report.violations]
    assert report.by_status == {"CONFIRMED": 11, "CANCELLED": 20}
    wait_for(lambda: "held" in pruned(stack))
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    assert settled(lambda: scrape(url).value("saga_history_pruned_sagas_total"), 31) == 31


def test_a_bad_retention_is_one_line_at_start(stack: Stack) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    env = {**stack.env, "SAGA_HISTORY_RETENTION": "30", "RECOVERY_METRICS_ADDR": metrics}
    assert_error_line(run_saga("recovery", env=env), "SAGA_HISTORY_RETENTION='30'")
