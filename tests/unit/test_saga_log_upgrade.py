"""The saga log's fourth migration on a log that already holds sagas: the per-minute counts
are filled in from what is there, and the payload search reads its index, never the table."""

from __future__ import annotations

from pathlib import Path

from engine.saga_log import MinuteCounts
from engine.sqlite import DbConfig, migrate, open_connection
from engine.sqlite_log import MIGRATIONS, SqliteSagaLog

MINUTE = 60_000
T0 = 1_700_000_040_000 // MINUTE * MINUTE


async def test_an_existing_log_gains_counts_per_minute_and_a_customer_index(
    tmp_path: Path,
) -> None:
    cfg = DbConfig(tmp_path / "saga.db")
    old = open_connection(cfg)
    assert migrate(old, MIGRATIONS[:3]) == 3  # the log as the previous version left it
    rows = [
        ("a", "COMPLETED", b'{"customer_id":"c1"}', T0, T0 + MINUTE),
        ("b", "COMPENSATED", b'{"customer_id":"c2"}', T0 + 1, T0 + MINUTE + 1),
        ("c", "RUNNING", b"opaque", T0 + MINUTE, T0 + MINUTE),
        ("d", "COMPLETED", b'{"customer_id":"c1"}', T0 + MINUTE, T0 + 2 * MINUTE),
    ]
    old.executemany(
        "INSERT INTO sagas (id, definition, status, payload, payload_digest, created_ms, "
        "updated_ms) VALUES (?, 'order', ?, ?, '', ?, ?)",
        rows,
    )
    old.close()

    log = SqliteSagaLog.open(cfg)
    try:
        assert await log.count_per_minute(since_ms=0) == [
            MinuteCounts(T0, created=2),
            MinuteCounts(T0 + MINUTE, created=2, completed=1, compensated=1),
            MinuteCounts(T0 + 2 * MINUTE, completed=1),
        ]
        # The adapter's query names its index (INDEXED BY): without one SQLite refuses it.
        found = await log.list_by_payload_field("customer_id", "c1", limit=10)
        assert [r.id for r in found.items] == ["d", "a"]
    finally:
        await log.close()
