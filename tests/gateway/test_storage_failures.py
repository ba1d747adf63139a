"""The saga log cannot be written: POST /orders is 503 `unavailable`, never a 201, and
nothing of the refused order is in the log. Three ways: an adapter that says so, a file
locked by another process past the busy timeout, and a full disk (a tiny tmpfs)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import apsw
import pytest

from engine.core import Transition
from engine.errors import StorageError, StorageFault
from engine.memory_log import MemorySagaLog
from engine.saga_log import CreateResult, NewSaga, SagaFilter
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from orders.participants import ServiceAddresses
from tests.gateway.conftest import FAST, ORDER_50, Api, gateway_settings, running


class FullLog(MemorySagaLog):
    """The in-memory log, except that creating a saga fails as a full disk would (once
    `full`; reads still work, as on a full disk)."""

    full = True

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        if self.full:
            raise StorageError(StorageFault.FULL, "saga.db: the disk holding the database is full")
        return await super().create(
            new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
        )


async def assert_refused_unwritten(api: Api, key: str | None = None) -> None:
    resp = await api.post_order(ORDER_50, key=key)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "unavailable"
    assert "location" not in resp.headers
    assert resp.headers["retry-after"].isdigit()
    assert "saga.db" not in resp.json()["message"]  # no paths or driver text for clients


async def test_a_log_that_cannot_write_is_503(tmp_path: Path, stack: ServiceAddresses) -> None:
    log = FullLog()
    async with running(gateway_settings(tmp_path, stack), log=log, policy=FAST) as api:
        await assert_refused_unwritten(api)
        await assert_refused_unwritten(api, key="k-1")
        assert (await log.list_sagas(SagaFilter(), limit=10)).items == ()
        metrics = (await api.client.get("/metrics")).text
        assert 'saga_orders_refused_total{code="unavailable"} 2.0' in metrics


async def test_a_log_locked_past_its_busy_timeout_is_503(
    tmp_path: Path, stack: ServiceAddresses
) -> None:
    settings = gateway_settings(tmp_path, stack)
    log = replace(settings.drive.log, db=replace(settings.drive.log.db, busy_timeout_ms=100))
    settings = replace(settings, drive=replace(settings.drive, log=log))
    async with running(settings, policy=FAST) as api:
        other = apsw.Connection(str(settings.drive.log.path))  # another process's lock, in effect
        # The gateway writes on its own (claims, lease renewals): wait for its transaction
        # to end, then hold the lock.
        other.set_busy_timeout(10_000)
        other.execute("BEGIN EXCLUSIVE")
        try:
            await assert_refused_unwritten(api, key="locked")
            ready = await api.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["saga_log"] != "ok"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await api.log.list_sagas(SagaFilter(), limit=10)).items == ()
        retried = await api.post_order(ORDER_50, key="locked")  # the same key, once free
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        await api.wait_terminal(retried.json()["id"])


async def test_an_order_placed_before_the_disk_filled_is_still_replayed(
    tmp_path: Path, stack: ServiceAddresses
) -> None:
    # The client's first 201 was lost; it retries after the disk has filled. Its order
    # exists, so it gets it (a read), not the 503 meant for orders that cannot be written.
    log = FullLog()
    log.full = False
    async with running(gateway_settings(tmp_path, stack), log=log, policy=FAST) as api:
        placed = await api.post_order(ORDER_50, key="placed")
        assert placed.status_code == 201
        log.full = True
        again = await api.post_order(ORDER_50, key="placed")
        assert again.status_code == 201, again.text
        assert again.json()["id"] == placed.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == placed.headers["location"]
        other_body = await api.post_order({**ORDER_50, "customer_id": "else"}, key="placed")
        assert (other_body.status_code, other_body.json()["error"]) == (
            422,
            "idempotency_key_reused",
        )
        await assert_refused_unwritten(api, key="new")
        assert len((await log.list_sagas(SagaFilter(), limit=10)).items) == 1


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of the file system of `folder`."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_is_503(tmp_path: Path, stack: ServiceAddresses) -> None:
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        settings = gateway_settings(tmp_path, stack)
        log = SqliteSagaLog.open(DbConfig(disk / "saga.db"))
        try:
            async with running(settings, log=log, policy=FAST) as api:
                filler = fill(disk)
                await assert_refused_unwritten(api, key="full")
                filler.unlink()
                assert (await log.list_sagas(SagaFilter(), limit=10)).items == ()
                retried = await api.post_order(ORDER_50, key="full")
                assert retried.status_code == 201
                await api.wait_terminal(retried.json()["id"])
        finally:
            await log.close()
