"""The PostgreSQL saga log across a crash of its server (a server of the test's own,
tests/support/pg_server.py, never the shared one): while it is down a write or a claim is
a StorageError and nothing is written; once it is back, the same open log carries on,
with no restart of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.errors import CommitOutcomeUnknown, StorageError
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import NewSaga
from tests.support.pg_server import PgServer


def test_the_log_carries_on_after_the_server_crashes(tmp_path: Path) -> None:
    async def main(pg: PgServer) -> None:
        log = await PgSagaLog.open(parse_url(pg.url(), "SAGA_DATABASE_URL"))
        try:
            now = log.clock.now_ms()
            saga = NewSaga("s1", "order", b"{}")
            await log.create(saga, owner="a", lease_expires_ms=0, now_ms=now)
            intent, done = Transition("s0", Phase.INTENT, 1), Transition("s0", Phase.DONE, 1)
            running = SagaStatus.RUNNING
            await log.append("s1", 1, [intent], status=running, reason=None, now_ms=now)

            await asyncio.to_thread(pg.kill)  # SIGKILL, every backend with it
            # An append is one statement with its own COMMIT (engine/pg/tx.py, statement):
            # sent on a pooled connection whose server just died, the client cannot tell
            # whether it arrived, so "unknown" is as honest an answer as "unavailable".
            with pytest.raises((StorageError, CommitOutcomeUnknown)):
                await log.append("s1", 1, [done], status=running, reason=None, now_ms=now)
            with pytest.raises(StorageError):
                await log.claim("b", limit=10, now_ms=now, lease_expires_ms=now + 1000)

            await asyncio.to_thread(pg.start)
            # The same log, no re-open: the pool connects again by itself.
            await log.append("s1", 1, [done], status=running, reason=None, now_ms=now)
            taken = await log.claim("b", limit=10, now_ms=now + 1, lease_expires_ms=now + 1000)
            assert [t.record.id for t in taken] == ["s1"]
            phases = [t.phase for t in await log.transitions("s1")]
            assert phases == [Phase.CREATED, Phase.INTENT, Phase.DONE, Phase.CLAIMED]
        finally:
            await log.close()

    with PgServer.create(tmp_path) as pg:
        asyncio.run(main(pg))
