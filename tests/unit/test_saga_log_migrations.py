"""The saga log's own migrations, on a file an earlier version wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.core import SagaStatus
from engine.sqlite import DbConfig, migrate, open_connection
from engine.sqlite_log import MIGRATIONS, SqliteSagaLog


def test_counts_start_right_on_a_log_written_before_they_existed(tmp_path: Path) -> None:
    cfg = DbConfig(tmp_path / "saga.db")
    old = open_connection(cfg)
    assert migrate(old, MIGRATIONS[:1]) == 1
    statuses = ["RUNNING"] * 3 + ["COMPLETED"] * 5 + ["NEEDS_ATTENTION"]
    for i, status in enumerate(statuses):
        old.execute(
            "INSERT INTO sagas (id, definition, status, payload, payload_digest, created_ms, "
            "updated_ms) VALUES (?, 'order', ?, x'7b7d', 'd', 0, 0)",
            (f"s{i}", status),
        )
    old.close()

    log = SqliteSagaLog.open(cfg)  # migrates to the latest version
    try:
        counts = asyncio.run(log.count_by_status())
        assert counts == {
            SagaStatus.RUNNING: 3,
            SagaStatus.COMPENSATING: 0,
            SagaStatus.COMPLETED: 5,
            SagaStatus.COMPENSATED: 0,
            SagaStatus.NEEDS_ATTENTION: 1,
        }
    finally:
        log.close_sync()
