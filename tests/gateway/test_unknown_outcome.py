"""POST /orders when the saga log's COMMIT fails part-way (its WAL fsync fails): the
client is never told 503 `unavailable` (which promises that nothing was created). The app
as a library answers 500 `outcome_unknown`; a serving gateway ends before it answers at
all (exit 74), the client's connection drops, and its retry with the same key after the
restart gets one order, whatever the failed COMMIT left.

The storage fails through tests/support/faultvfs.py: in this process, or in the gateway
child through its start-up hook."""

from __future__ import annotations

from pathlib import Path

import apsw
import httpx
import pytest

from engine.errors import CommitOutcomeUnknown
from engine.saga_log import SagaFilter
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from orders.participants import ServiceAddresses
from tests.gateway.conftest import FAST, ORDER_50, gateway_settings, running
from tests.gateway.procs import stack, wait_terminal
from tests.support.faultvfs import Fault, faulty_env, installed

FSYNC_FAILS = apsw.SQLITE_IOERR_FSYNC


async def test_the_app_answers_outcome_unknown_never_503(
    tmp_path: Path, stack: ServiceAddresses
) -> None:
    settings = gateway_settings(tmp_path, stack)
    with installed() as vfs:
        log = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))  # FULL: COMMIT syncs
        try:
            async with running(settings, log=log, policy=FAST) as api:
                placed = await api.post_order(ORDER_50, key="before")
                assert placed.status_code == 201
                await api.wait_terminal(placed.json()["id"])  # its saga writes no more
                vfs.arm(Fault("saga.db-wal", "sync", 1, FSYNC_FAILS))
                for key in ("during", "after"):  # after: the writer is poisoned
                    resp = await api.post_order(ORDER_50, key=key)
                    assert resp.status_code == 500, resp.text
                    assert resp.json()["error"] == "outcome_unknown"
                    assert "retry with the same idempotency key" in resp.json()["message"]
                metrics = (await api.client.get("/metrics")).text
                assert 'code="outcome_unknown"' not in metrics  # not counted as a refusal
        finally:
            await log.close()


@pytest.mark.slow
def test_a_serving_gateway_drops_the_request_exits_74_and_the_retry_gets_one_order(
    tmp_path: Path,
) -> None:
    arm = tmp_path / "arm"  # the fault counts once this exists: not during start-up
    fault = Fault("saga.db-wal", "sync", 1, FSYNC_FAILS, when=str(arm))
    # A short lease: if k1's COMMIT did land, the dead gateway's claim on it runs out soon.
    with stack(tmp_path, start_gateway=False, gateway_env={"SAGA_LEASE_S": "1"}) as s:
        plain = dict(s.env)
        s.env.update(faulty_env(fault))
        gateway = s.start_gateway()
        s.env = plain
        with s.client() as client:
            warm = client.post("/orders", json=ORDER_50, headers={"X-Idempotency-Key": "warm"})
            assert warm.status_code == 201
            wait_terminal(client, warm.json()["id"])  # its saga writes no more
            arm.touch()
            with pytest.raises(httpx.TransportError):  # no answer: no 201, no 503, no 500
                client.post("/orders", json=ORDER_50, headers={"X-Idempotency-Key": "k1"})
        assert gateway.wait(10) == CommitOutcomeUnknown.exit_code
        assert "whether it is durable is unknown" in gateway.output()
        arm.unlink()
        s.start_gateway()  # as `saga up` would, without the fault
        with s.client() as client:
            again = client.post("/orders", json=ORDER_50, headers={"X-Idempotency-Key": "k1"})
            assert again.status_code == 201, again.text
            assert wait_terminal(client, again.json()["id"])["status"] == "CONFIRMED"
        with s.log() as log:
            sagas = log.list_sagas_sync(SagaFilter(), limit=9).items
        keys = [str(saga.idempotency_key) for saga in sagas]
        assert sorted(keys) == ["k1", "warm"]  # one order per key, whatever k1's COMMIT left
        report = s.audit(wait_s=20)
        assert report.ok, report.violations


@pytest.mark.slow
def test_a_serving_gateway_answers_a_lock_held_past_its_timeout_with_a_clean_503(
    tmp_path: Path,
) -> None:
    # The other way: a BEGIN that found the lock taken wrote nothing, so a 503 is the truth,
    # and the gateway carries on.
    with stack(tmp_path, gateway_env={"SAGA_SQLITE_BUSY_TIMEOUT_MS": "100"}) as s:
        other = apsw.Connection(str(s.log_path))  # another process's lock, in effect
        other.execute("BEGIN EXCLUSIVE")
        try:
            with s.client() as client:
                refused = client.post("/orders", json=ORDER_50, headers={"X-Idempotency-Key": "k"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "unavailable"
        assert s.gateway is not None and s.gateway.running
        with s.log() as log:
            assert log.list_sagas_sync(SagaFilter(), limit=9).items == ()  # nothing was created
        with s.client() as client:
            placed = client.post("/orders", json=ORDER_50, headers={"X-Idempotency-Key": "k"})
            assert placed.status_code == 201, placed.text
            assert "idempotent-replayed" not in placed.headers
            assert wait_terminal(client, placed.json()["id"])["status"] == "CONFIRMED"
