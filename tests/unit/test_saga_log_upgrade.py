"""The SQLite saga log's reads for the explorer: its fourth migration on a log that already
holds sagas (the per-minute counts filled in from what is there, the payload search on its
index), and lists by age that read only the seq range that can match, yet stay exact when
sagas were numbered out of creation order by up to AGE_SLACK_MS."""

from __future__ import annotations

import random
from pathlib import Path

from engine.saga_log import MinuteCounts, NewSaga, SagaFilter
from engine.sqlite import DbConfig, migrate, open_connection
from engine.sqlite_log import AGE_SLACK_MS, MIGRATIONS, SqliteSagaLog

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


async def test_lists_by_age_are_exact_though_they_read_a_seq_range(tmp_path: Path) -> None:
    log = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))
    rng = random.Random(3)
    created: dict[str, int] = {}
    try:
        # Two hours of sagas, each stamped up to the slack before it was numbered (a writer
        # that waited for the lock): their seq order strays from their creation order.
        for i in range(400):
            at = T0 + i * 18_000 - rng.randrange(AGE_SLACK_MS)  # stamped before its commit
            sid = f"s{i:03d}"
            created[sid] = at
            await log.create(
                NewSaga(sid, "order", b"{}"), owner=None, lease_expires_ms=0, now_ms=at
            )
        newest_first = sorted(created, reverse=True)
        for after, before in [
            (T0 + 3_600_000, None),
            (T0 + 7_100_000, None),
            (T0 + 9_000_000, None),
            (None, T0 + 60_000),
            (None, T0 + 3_000_000),
            (T0 + 1_000_000, T0 + 1_900_000),
            (None, T0 - 3_600_000),
        ]:
            flt = SagaFilter(created_after_ms=after, created_before_ms=before)
            page = await log.list_sagas(flt, limit=1000)
            expected = [
                sid
                for sid in newest_first
                if (after is None or created[sid] >= after)
                and (before is None or created[sid] < before)
            ]
            assert [r.id for r in page.items] == expected, (after, before)
    finally:
        await log.close()
