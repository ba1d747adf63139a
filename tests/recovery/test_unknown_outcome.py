"""The recovery daemon when a write to the saga log has an unknown outcome (its WAL fsync
fails on the daemon's first claim): it ends at once with exit code 74, like the gateway,
and started again (as `saga up` would) finishes every saga."""

from __future__ import annotations

import apsw

from engine.errors import CommitOutcomeUnknown
from tests.support.faultvfs import Fault, faulty_env, without_faults
from tests.support.stack import ORDERS, Stack


def test_the_daemon_exits_74_on_an_unknown_outcome_and_its_restart_recovers(
    stack: Stack,
) -> None:
    kinds = list(ORDERS)
    stack.seed_sagas([(f"o-{i}", ORDERS[kinds[i % 3]]) for i in range(9)], owner=None)
    fault = Fault("saga.db-wal", "sync", 1, apsw.SQLITE_IOERR_FSYNC)
    daemon = stack.recovery(faulty_env(fault), wait=False)
    assert daemon.wait(30) == CommitOutcomeUnknown.exit_code
    assert "whether it is durable is unknown" in daemon.output()
    daemon.env = without_faults(daemon.env)
    daemon.start()
    report = stack.audit(wait_s=30)
    assert report.ok, [str(v) for v in report.violations]
    assert report.orders == 9
