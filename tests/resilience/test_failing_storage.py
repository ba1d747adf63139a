"""Storage that fails under the saga log and each ledger (tests/support/faultvfs.py): the
N-th write of a file's WAL fails with SQLITE_FULL (part of it written, as ENOSPC does) or
SQLITE_IOERR_WRITE, or the N-th fsync with SQLITE_IOERR_FSYNC.

What must hold: a full disk is a clean refusal (StorageError: nothing of the unit is
there, and the writer goes on once there is room); an I/O error is an unknown outcome
(CommitOutcomeUnknown, the writer takes no more work), whose unit is there entirely or
not at all; and the next process (the files as a SIGKILL leaves them) finds everything
acknowledged, recovers every saga, and keeps every invariant.

Last, a real one: the saga log on a small tmpfs that fills under load, with the real
gateway and services: 201 or 503, never a lie, and orders again once there is room."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import apsw
import httpx
import pytest

from engine.errors import CommitOutcomeUnknown, EngineError, StorageError, StorageFault
from engine.saga_log import NewSaga
from engine.sqlite import DbConfig, Synchronous
from engine.sqlite_log import SqliteSagaLog
from orders.audit import audit
from orders.audit_io import read_snapshot, wait_until_settled
from orders.model import ORDER_SAGA, Item, OrderRequest
from services.inventory import ledger as inventory
from services.order import ledger as orders
from services.payment import ledger as payments
from tests.gateway.test_storage_failures import fill, tiny_disk
from tests.support.faultvfs import Fault, installed
from tests.support.ledger_world import (
    Recorder,
    World,
    check,
    killed_copy,
    mixed_orders,
    opened,
    run,
)
from tests.support.stack import PLENTY, Stack, wait_for

DBS: Final = ("saga", "order", "payment", "inventory")


@dataclass(frozen=True, slots=True)
class Trouble:
    name: str
    call: Literal["write", "sync"]
    code: int
    short: bool  # the failing write writes part of its data first
    clean: bool  # what the caller must be told: nothing happened (True) or unknown
    lands: bool  # whether the failed unit is in the file the next process reads


TROUBLES: Final = (
    Trouble("full", "write", apsw.SQLITE_FULL, short=True, clean=True, lands=False),
    Trouble("write_error", "write", apsw.SQLITE_IOERR_WRITE, short=False, clean=False, lands=False),
    # The frames reached the file before the fsync failed: "nothing happened" would be a lie.
    Trouble("fsync_error", "sync", apsw.SQLITE_IOERR_FSYNC, short=False, clean=False, lands=True),
)


def fault(db: str, trouble: Trouble, nth: int) -> Fault:
    return Fault(f"{db}.db-wal", trouble.call, nth, trouble.code, short=trouble.short)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs for the copies when there is one: checking opens four files, and each open
    syncs its folder."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="failing-storage-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- one unit at a time: what the caller hears is what the file holds ------------------------


def one_write(world: World, db: str, i: int) -> Awaitable[object]:
    """The i-th write of one kind to `db`, through the same code as the system's."""
    oid = f"u-{i}"
    if db == "saga":
        request = OrderRequest("cust_1", (Item("prod_1", 1, 100),))
        new = NewSaga(oid, ORDER_SAGA, request.to_payload(), idempotency_key=f"key-{oid}")
        return world.log.create(new, owner=None, lease_expires_ms=0, now_ms=1)
    if db == "order":
        return world.order.write(lambda c: orders.create(c, oid, 1, "cust_1", [("prod_1", 1, 1)]))
    if db == "payment":
        return world.payment.write(lambda c: payments.charge(c, oid, 1, 100, "cust_1"))
    return world.inventory.write(lambda c: inventory.reserve(c, oid, 1, [("prod_1", 1)]))


def held(folder: Path, db: str, i: int) -> bool | None:
    """Whether the i-th write is in `db`: True or False when every row of it agrees, None
    when only a part of it is there."""
    oid = f"u-{i}"
    queries = {
        "saga": [
            "SELECT count(*) FROM sagas WHERE id = ?",
            "SELECT count(*) FROM transitions JOIN sagas ON saga_seq = seq WHERE id = ?",
        ],
        "order": [
            "SELECT count(*) FROM orders WHERE id = ?",
            "SELECT count(*) FROM order_items WHERE order_id = ?",
            "SELECT count(*) FROM fences WHERE order_id = ?",
        ],
        "payment": [
            "SELECT count(*) FROM payments WHERE order_id = ?",
            "SELECT count(*) FROM journal WHERE order_id = ?",
            "SELECT count(*) FROM fences WHERE order_id = ?",
        ],
        "inventory": [
            "SELECT count(*) FROM reservations WHERE order_id = ?",
            "SELECT count(*) FROM reservation_items WHERE order_id = ?",
            "SELECT count(*) FROM journal WHERE order_id = ?",
            "SELECT count(*) FROM fences WHERE order_id = ?",
        ],
    }[db]
    conn = apsw.Connection(str(folder / f"{db}.db"), vfs="unix")

    def one(sql: str, *args: object) -> int:
        value = conn.execute(sql, args).fetchall()[0][0]
        assert isinstance(value, int), (sql, value)
        return value

    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        present = {one(q, oid) > 0 for q in queries}
        # What the same commit keeps beside the rows: the per-status counts of the log's
        # triggers, the stock a reservation takes.
        if db == "saga":
            assert one("SELECT sum(n) FROM saga_counts") == one("SELECT count(*) FROM sagas")
        if db == "inventory":
            taken = one("SELECT initial - available FROM products WHERE product_id = 'prod_1'")
            assert taken == one("SELECT count(*) FROM reservations")
    finally:
        conn.close()
    return present.pop() if len(present) == 1 else None


@pytest.mark.parametrize("nth", [1, 4])
@pytest.mark.parametrize("trouble", TROUBLES, ids=lambda t: t.name)
@pytest.mark.parametrize("db", DBS)
async def test_a_failed_write_is_reported_as_what_it_did(
    tmp_path: Path, scratch: Path, db: str, trouble: Trouble, nth: int
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    image = scratch / "after-kill"
    with installed() as vfs:
        async with opened(data) as world:
            armed = vfs.arm(fault(db, trouble, nth))
            done, failure = 0, None
            for i in range(12):
                try:
                    await one_write(world, db, i)
                except (StorageError, CommitOutcomeUnknown) as exc:
                    failure = exc
                    break
                done += 1
            assert armed.fired == 1 and failure is not None
            if trouble.clean:
                assert isinstance(failure, StorageError)
                assert failure.fault is StorageFault.FULL
                await one_write(world, db, 99)  # there is room again: the writer goes on
            else:
                assert isinstance(failure, CommitOutcomeUnknown)
                with pytest.raises(CommitOutcomeUnknown):  # it takes no more work
                    await one_write(world, db, 99)
            killed_copy(data, image)  # the process dies here
    for i in range(done):
        assert held(image, db, i) is True, f"acknowledged write {i} is gone"
    failed = held(image, db, done)
    assert failed is not None, "the failed write is there in part"
    assert failed is trouble.lands
    if trouble.clean:
        assert held(image, db, 99) is True
    else:
        assert held(image, db, 99) is False  # nothing after the unknown


# ---- the saga flow: the next process recovers whatever the failure left ----------------------


def _flow_nth(db: str, trouble: Trouble) -> int:
    """Which call of its kind fails, so that it fails inside one of the flow's commits.

    A ledger's few writes in this flow (payment's four charges, say) may all share one
    group commit, and its next sync would then be the checkpoint when it closes, after the
    flow: a sync fault waits for the second sync only on the saga log, which commits at
    every step."""
    if trouble.call != "sync":
        return 5
    return 2 if db == "saga" else 1


@pytest.mark.parametrize("trouble", TROUBLES, ids=lambda t: t.name)
@pytest.mark.parametrize("db", DBS)
async def test_the_flow_recovers_from_a_failed_write(
    tmp_path: Path, scratch: Path, db: str, trouble: Trouble
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    image = scratch / "after-kill"
    recorder = Recorder()
    acked_at_death: list[int] = []
    poisoned: list[str] = []

    def die(exc: CommitOutcomeUnknown) -> None:
        # As engine.sqlite.end_process would: the files stay as they are, now.
        poisoned.append(exc.path)
        if not acked_at_death:
            acked_at_death.append(recorder.count())
            killed_copy(data, image)

    with installed() as vfs:
        async with opened(data, Synchronous.FULL, recorder) as world:
            for target in (world.log, world.order, world.payment, world.inventory):
                target.on_poisoned(die)
            armed = vfs.arm(fault(db, trouble, _flow_nth(db, trouble)))
            flow = asyncio.create_task(
                run(world, [mixed_orders(3, "a"), mixed_orders(3, "b")], owner="gateway")
            )
            while not flow.done() and not acked_at_death:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            flow.cancel()
            (ended,) = await asyncio.gather(flow, return_exceptions=True)
            # A create the log refused ends the flow with its error; nothing else may.
            assert ended is None or isinstance(ended, asyncio.CancelledError | EngineError)
            if not acked_at_death:
                acked_at_death.append(recorder.count())
                killed_copy(data, image)
    assert armed.fired == 1
    assert bool(poisoned) is not trouble.clean, poisoned
    heard = [(name, type(exc)) for name, exc in recorder.errors]
    expected = StorageError if trouble.clean else CommitOutcomeUnknown
    assert (db, expected) in heard, heard
    assert all(kind is expected for name, kind in heard if name == db), heard
    verdict = await check(image, recorder.acks[: acked_at_death[0]])
    assert not verdict.problems, verdict.problems[:10]


# ---- a real disk that fills under load, and room given back ----------------------------------

BODY: Final = {"customer_id": "cust_1", "items": [{"product_id": "prod_1", "quantity": 1,
                                                  "price": 5.00}]}  # fmt: skip


@dataclass
class Answers:
    """What the clients were told, per idempotency key."""

    created: dict[str, str] = field(default_factory=dict)  # 201: key -> order id
    refused: dict[str, str] = field(default_factory=dict)  # 503 unavailable: key -> message
    dropped: list[str] = field(default_factory=list)  # no answer: the gateway ended
    other: list[str] = field(default_factory=list)  # anything else is a failure
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, client: httpx.Client, key: str) -> None:
        try:
            resp = client.post("/orders", json=BODY, headers={"X-Idempotency-Key": key})
        except httpx.TransportError:
            with self.lock:
                self.dropped.append(key)
            return
        with self.lock:
            if resp.status_code == 201:
                self.created[key] = resp.json()["id"]
            elif resp.status_code == 503 and resp.json()["error"] == "unavailable":
                self.refused[key] = resp.json()["message"]
            else:
                self.other.append(f"{key}: {resp.status_code} {resp.text}")


def load(url: str, answers: Answers, stop: threading.Event, keys: Iterator[int]) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as client:
        while not stop.is_set():
            answers.post(client, f"k-{next(keys)}")
            if answers.dropped:
                stop.wait(0.2)  # the gateway is gone: no point hammering its port


@pytest.mark.slow
def test_a_log_disk_that_fills_under_load_refuses_then_takes_orders_again(
    tmp_path: Path,
) -> None:
    # 16 MB: the WAL checkpoints at 1000 pages (4 MB). On a disk smaller than that plus the
    # database the WAL fills the disk before its first checkpoint, and stays full.
    with tiny_disk(tmp_path / "disk", "16m") as disk:
        log_path = disk / "saga.db"  # the ledgers and the processes' logs stay off it
        s = Stack.create(
            tmp_path, SAGA_LOG_DB_PATH=str(log_path), SAGA_LEASE_S="1", INVENTORY_SEED_STOCK=PLENTY
        )
        try:
            s.start_services()
            gateway = s.start_gateway()
            answers, stop = Answers(), threading.Event()
            keys = itertools.count()  # next() on it is atomic under the GIL
            clients = [
                threading.Thread(target=load, args=(s.url, answers, stop, keys)) for _ in range(4)
            ]
            for client in clients:
                client.start()
            try:
                wait_for(lambda: len(answers.created) >= 20, 20, "no orders before the fill")
                filler = fill(disk)
                wait_for(lambda: len(answers.refused) >= 20 or not gateway.running, 20, "no 503")
            finally:
                stop.set()
                for client in clients:
                    client.join(20)
            assert not answers.other, answers.other[:5]  # 201 or 503, never a 500
            filler.unlink()  # room again
            if not gateway.running:  # only the unknown-outcome rule may end it
                assert gateway.wait(5) == CommitOutcomeUnknown.exit_code
                s.start_gateway()  # as `saga up` would
            else:
                assert not answers.dropped
            again = Answers()
            with httpx.Client(base_url=s.url, timeout=10.0) as http:
                for key in [f"after-{i}" for i in range(5)] + answers.dropped:
                    again.post(http, key)  # new orders, and the dropped ones' retries
            assert len(again.created) == 5 + len(answers.dropped), again
            wait_until_settled(log_path, 30)
            report = audit(read_snapshot(log_path, s.addresses))
            assert report.ok, [str(v) for v in report.violations]
            log = SqliteSagaLog.open_readonly(DbConfig(log_path))
            try:
                for key, order_id in {**answers.created, **again.created}.items():
                    record = log.get_sync(order_id)
                    assert record is not None and record.status.finished, (key, record)
                for key, message in answers.refused.items():
                    assert "nothing was done" in message
                    assert asyncio.run(log.get_by_key(key)) is None, f"{key} had a 503"
            finally:
                log.close_sync()
        finally:
            s.close()
