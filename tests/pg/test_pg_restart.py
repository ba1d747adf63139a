"""The PostgreSQL saga log across a restart of its server (a server of the test's own,
never the shared one): while it is down a write is a StorageError and nothing is
written; once it is back, the same open log carries on, with no restart of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.errors import StorageError
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import NewSaga
from saga.probes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


class Server:
    """A PostgreSQL cluster in a temporary folder, run as the `postgres` user (initdb and
    postgres refuse root), listening on a free loopback port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres")
        self._as_postgres(BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust")

    def _as_postgres(self, *argv: object) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, argv)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = self.root / "server.log"
        self._as_postgres(BIN / "pg_ctl", "start", "-w", "-D", self.data, "-l", log, "-o", options)

    def stop(self) -> None:
        self._as_postgres(BIN / "pg_ctl", "stop", "-w", "-m", "fast", "-D", self.data)

    def remove(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", BIN / "pg_ctl", "stop", "-m", "immediate",
             "-D", self.data],
            capture_output=True,
            check=False,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.fail("this test starts its own PostgreSQL as the postgres user: run it as root")
    srv = Server()
    try:
        srv.start()
        yield srv
    finally:
        srv.remove()


def test_the_log_carries_on_after_the_server_restarts(server: Server) -> None:
    async def main() -> None:
        log = await PgSagaLog.open(parse_url(server.url, "SAGA_DATABASE_URL"))
        try:
            now = log.clock.now_ms()
            await log.create(
                NewSaga("s1", "order", b"{}"), owner="a", lease_expires_ms=0, now_ms=now
            )
            intent = Transition("s0", Phase.INTENT, 1)
            await log.append("s1", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=now)

            await asyncio.to_thread(server.stop)
            done = Transition("s0", Phase.DONE, 1)
            with pytest.raises(StorageError):
                await log.append(
                    "s1", 1, [done], status=SagaStatus.RUNNING, reason=None, now_ms=now
                )
            with pytest.raises(StorageError):
                await log.claim("b", limit=10, now_ms=now, lease_expires_ms=now + 1000)

            await asyncio.to_thread(server.start)
            # The same log, no re-open: the pool connects again by itself.
            await log.append("s1", 1, [done], status=SagaStatus.RUNNING, reason=None, now_ms=now)
            taken = await log.claim("b", limit=10, now_ms=now + 1, lease_expires_ms=now + 1000)
            assert [t.record.id for t in taken] == ["s1"]
            phases = [t.phase for t in await log.transitions("s1")]
            assert phases == [Phase.CREATED, Phase.INTENT, Phase.DONE, Phase.CLAIMED]
        finally:
            await log.close()

    asyncio.run(main())
