"""The order saga in one process with no network, for the storage-failure and power-loss
tests: the Runner over a SqliteSagaLog, and participants that run the services' own
ledger modules (services/*/ledger.py) through LedgerStores, the same write units as the
gRPC servicers. Every answer is recorded once it was given, i.e. once it was durable: a
saga created or a transition appended in the log, a service call answered.

`check(folder, acks)` reads a folder of the four files (a crash image) as the next boot
would and lists what is wrong: a failed integrity check, an acknowledgement whose row is
not there, a saga that recovery (a Runner claiming) does not finish, a broken invariant.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar, cast

import apsw

from engine.clock import SystemClock
from engine.core import ACTIVE_STATUSES, SagaStatus, Transition
from engine.definition import SagaDefinition
from engine.errors import CommitOutcomeUnknown, StaleEpoch, StorageError, TransientStepError
from engine.runner import Runner, RunnerSettings
from engine.saga_log import CreateResult, NewSaga, SagaFilter, Takeover
from engine.sqlite import DbConfig, Synchronous
from engine.sqlite_log import SqliteSagaLog
from orders.audit import OrderRow, PaymentRow, ReservationRow, Snapshot, audit
from orders.audit_io import saga_row
from orders.errors import CallRefused
from orders.model import ORDER_SAGA, Item, OrderRequest
from orders.participants import Participants
from orders.saga import OrderSagaPolicy, order_saga
from proto.inventory.v1 import inventory_pb2
from proto.order.v1 import order_pb2
from proto.payment.v1 import payment_pb2
from services.common.errors import ServiceError
from services.common.paging import PageRequest
from services.common.store import LedgerStore
from services.inventory import ledger as inventory
from services.order import ledger as orders
from services.payment import ledger as payments

__all__ = [
    "FILES",
    "Ack",
    "Answered",
    "Appended",
    "Created",
    "Recorder",
    "Verdict",
    "World",
    "check",
    "killed_copy",
    "mixed_orders",
    "opened",
    "run",
]

T = TypeVar("T")

FILES: Final = ("saga.db", "order.db", "payment.db", "inventory.db")
SEED: Final = (("prod_1", 15), ("prod_2", 10), ("prod_3", 0))
POLICY: Final = OrderSagaPolicy(
    max_attempts=4, park_after=8, initial_backoff_s=0.001, max_backoff_s=0.01, step_timeout_s=5
)
_ALL: Final = PageRequest(10_000, "")


@dataclass(frozen=True, slots=True)
class Created:
    saga_id: str
    key: str | None


@dataclass(frozen=True, slots=True)
class Appended:
    saga_id: str
    facts: frozenset[tuple[str, str, int]]  # (step, phase, attempt)


@dataclass(frozen=True, slots=True)
class Answered:
    db: str  # "order", "inventory", "payment"
    operation: str
    order_id: str
    success: bool


Ack = Created | Appended | Answered


@dataclass
class Recorder:
    """Every acknowledgement, in order (`len(acks)` is the power model's clock), and every
    storage error a caller heard, with the file it came from."""

    acks: list[Ack] = field(default_factory=list)
    errors: list[tuple[str, StorageError | CommitOutcomeUnknown]] = field(default_factory=list)

    def heard(self, db: str, exc: BaseException) -> None:
        if isinstance(exc, StorageError | CommitOutcomeUnknown):
            self.errors.append((db, exc))

    def count(self) -> int:
        return len(self.acks)

    def transitions(self, saga_id: str, ts: Sequence[Transition]) -> None:
        facts = frozenset((t.step, t.phase.value, t.attempt) for t in ts)
        self.acks.append(Appended(saga_id, facts))


class RecordingLog(SqliteSagaLog):
    """The SQLite saga log, recording what it acknowledged (after its writer's COMMIT)."""

    recorder: Recorder | None = None

    async def _write(self, unit: Callable[[apsw.Connection], T]) -> T:
        try:
            return await super()._write(unit)
        except Exception as exc:
            if self.recorder is not None:
                self.recorder.heard("saga", exc)
            raise

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        result = await super().create(
            new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
        )
        if self.recorder is not None:
            self.recorder.acks.append(Created(result.record.id, new.idempotency_key))
        return result

    async def append(
        self,
        saga_id: str,
        epoch: int,
        transitions: Sequence[Transition],
        *,
        status: SagaStatus,
        reason: str | None,
        now_ms: int,
    ) -> None:
        await super().append(
            saga_id, epoch, transitions, status=status, reason=reason, now_ms=now_ms
        )
        if self.recorder is not None:
            self.recorder.transitions(saga_id, transitions)

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        taken = await super().claim(
            owner, limit=limit, now_ms=now_ms, lease_expires_ms=lease_expires_ms
        )
        if self.recorder is not None:
            for takeover in taken:
                self.recorder.transitions(takeover.record.id, takeover.transitions[-1:])
        return taken


class LedgerParticipants:
    """What orders/participants.py's client does over gRPC, straight to the ledgers; errors
    translated as that client translates the services' status codes."""

    def __init__(
        self,
        order: LedgerStore,
        payment: LedgerStore,
        inventory: LedgerStore,
        recorder: Recorder | None,
    ) -> None:
        self._order, self._payment, self._inventory = order, payment, inventory
        self._recorder = recorder

    async def _write(self, db: str, store: LedgerStore, unit: Callable[[apsw.Connection], T]) -> T:
        try:
            return await store.write(unit)
        except StaleEpoch:
            raise  # ABORTED over gRPC: the caller lost the saga
        except (StorageError, CommitOutcomeUnknown) as exc:  # UNAVAILABLE, UNKNOWN
            if self._recorder is not None:
                self._recorder.heard(db, exc)
            raise TransientStepError(f"{db}: {exc.message}") from exc
        except ServiceError as exc:
            raise CallRefused(f"{db}_rejected", exc.message) from exc

    def _said(self, db: str, operation: str, order_id: str, success: bool) -> None:
        if self._recorder is not None:
            self._recorder.acks.append(Answered(db, operation, order_id, success))

    async def create_order(
        self, order_id: str, customer_id: str, items: list[order_pb2.OrderItem], epoch: int
    ) -> order_pb2.OrderInfo:
        lines = [(i.product_id, i.quantity, i.unit_price_cents) for i in items]
        made = await self._write(
            "order",
            self._order,
            lambda c: orders.create(c, order_id, epoch, customer_id, lines),
        )
        self._said("order", "CreateOrder", order_id, True)
        return order_pb2.OrderInfo(id=made.id, total_cents=made.total_cents)

    async def set_order_status(
        self, order_id: str, status: order_pb2.Status.ValueType, reason: str, epoch: int
    ) -> bool:
        to = orders.LedgerStatus.CONFIRMED
        if status == order_pb2.CANCELLED:
            to = orders.LedgerStatus.CANCELLED
        ok = await self._write(
            "order",
            self._order,
            lambda c: orders.update_status(c, order_id, epoch, to, reason),
        )
        self._said("order", f"UpdateOrderStatus:{to.value}", order_id, ok)
        return ok

    async def reserve(
        self, order_id: str, items: list[inventory_pb2.StockItem], epoch: int
    ) -> inventory_pb2.ReserveResponse:
        lines = [(i.product_id, i.quantity) for i in items]
        answer = await self._write(
            "inventory",
            self._inventory,
            lambda c: inventory.reserve(c, order_id, epoch, lines),
        )
        self._said("inventory", "Reserve", order_id, answer.success)
        return inventory_pb2.ReserveResponse(success=answer.success, reason=answer.reason)

    async def release(self, order_id: str, epoch: int) -> bool:
        answer = await self._write(
            "inventory", self._inventory, lambda c: inventory.release(c, order_id, epoch)
        )
        self._said("inventory", "Release", order_id, answer.success)
        return answer.success

    async def charge(
        self, order_id: str, amount_cents: int, customer_id: str, epoch: int
    ) -> payment_pb2.ChargeResponse:
        answer = await self._write(
            "payment",
            self._payment,
            lambda c: payments.charge(c, order_id, epoch, amount_cents, customer_id),
        )
        self._said("payment", "Charge", order_id, answer.success)
        return payment_pb2.ChargeResponse(success=answer.success, reason=answer.reason)


@dataclass(frozen=True, slots=True)
class World:
    log: RecordingLog
    order: LedgerStore
    payment: LedgerStore
    inventory: LedgerStore
    definition: SagaDefinition


@contextlib.asynccontextmanager
async def opened(
    folder: Path, sync: Synchronous = Synchronous.FULL, recorder: Recorder | None = None
) -> AsyncIterator[World]:
    """The four files in `folder`, open (made and migrated if new, stock seeded), with the
    order saga's definition over them; closed on leaving."""
    async with contextlib.AsyncExitStack() as stack:
        cfg = DbConfig(folder / "saga.db", sync)
        log = RecordingLog.open(cfg)
        stack.callback(log.close_sync)
        log.recorder = recorder
        stores: list[LedgerStore] = []
        for name, migrations in (
            ("order", orders.MIGRATIONS),
            ("payment", payments.MIGRATIONS),
            ("inventory", inventory.MIGRATIONS),
        ):
            store = LedgerStore(DbConfig(folder / f"{name}.db", sync), migrations, name=name)
            stack.callback(store.close)
            stores.append(store)
        order, payment, stock = stores
        await stock.write(lambda c: inventory.seed(c, SEED))
        parts = LedgerParticipants(order, payment, stock, recorder)
        definition = order_saga(cast(Participants, parts), POLICY)
        yield World(log, order, payment, stock, definition)


def mixed_orders(n: int, prefix: str = "o") -> list[tuple[str, OrderRequest]]:
    """Confirmed, declined (over 500.00) and out of stock, in turn."""
    kinds = (
        OrderRequest("cust_1", (Item("prod_1", 1, 5_000),)),
        OrderRequest("cust_1", (Item("prod_2", 1, 60_000),)),
        OrderRequest("cust_1", (Item("prod_3", 1, 100),)),
    )
    return [(f"{prefix}-{i}", kinds[i % 3]) for i in range(n)]


def new_saga(order_id: str, request: OrderRequest) -> NewSaga:
    return NewSaga(order_id, ORDER_SAGA, request.to_payload(), idempotency_key=f"key-{order_id}")


async def run(
    world: World,
    waves: Sequence[Sequence[tuple[str, OrderRequest]]],
    *,
    owner: str = "flow",
    clock_ms: Callable[[], int] | None = None,
) -> None:
    """Start each wave's sagas at once, then drive every saga until none is in flight."""
    runner = Runner(
        world.log,
        [world.definition],
        RunnerSettings(owner=owner, lease_s=60, capacity=64, poll_s=0.01),
        clock=_Clock(clock_ms),
    )
    await runner.start()
    try:
        for wave in waves:
            await asyncio.gather(*(runner.start_saga(new_saga(*order)) for order in wave))
        async with asyncio.timeout(30):
            await runner.wait_idle()
    finally:
        await runner.stop()


class _Clock:
    def __init__(self, now_ms: Callable[[], int] | None) -> None:
        self._now = now_ms or SystemClock().now_ms

    def now_ms(self) -> int:
        return self._now()


# ---- checking a folder ----------------------------------------------------------------------


def killed_copy(folder: Path, into: Path) -> Path:
    """The files as a SIGKILL at this instant leaves them to the next process: what the
    kernel holds, without the WAL index (shared memory, rebuilt from the WAL)."""
    into.mkdir(parents=True)
    for name in FILES:
        for part in (name, f"{name}-wal"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(folder / part, into / part)
    return into


def _rows(conn: apsw.Connection | None, sql: str, *args: object) -> list[tuple[object, ...]]:
    """The rows of a query; none when the file or its table is not there."""
    if conn is None:
        return []
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    except apsw.SQLError as exc:
        if "no such table" in str(exc):
            return []
        raise


def missing(folder: Path, acks: Sequence[Ack]) -> list[str]:
    """Integrity, then every acknowledgement against what the files hold."""
    problems: list[str] = []
    conns: dict[str, apsw.Connection | None] = {}
    try:
        for name in FILES:
            path = folder / name
            conns[name] = None
            if not path.exists():
                continue
            conn = apsw.Connection(str(path), vfs="unix")
            conns[name] = conn
            verdict = conn.execute("PRAGMA integrity_check").fetchall()
            if verdict != [("ok",)]:
                problems.append(f"{name}: integrity_check says {verdict[:3]}")
        log = conns["saga.db"]
        sagas = {
            str(i): (s, k) for i, s, k in _rows(log, "SELECT id, seq, idempotency_key FROM sagas")
        }
        for ack in acks:
            if isinstance(ack, Created):
                if ack.saga_id not in sagas:
                    problems.append(f"saga {ack.saga_id} was acknowledged and is gone")
                elif sagas[ack.saga_id][1] != ack.key:
                    problems.append(f"saga {ack.saga_id} has another key")
            elif isinstance(ack, Appended):
                seq = sagas.get(ack.saga_id, (None, None))[0]
                held = {
                    (str(s), str(p), int(str(a)))
                    for s, p, a in _rows(
                        log,
                        "SELECT step, phase, attempt FROM transitions WHERE saga_seq = ?",
                        seq,
                    )
                }
                if not ack.facts <= held:
                    problems.append(
                        f"saga {ack.saga_id}: acknowledged {sorted(ack.facts - held)} are gone"
                    )
            elif not _answer_held(conns, ack):
                problems.append(f"{ack.db}: the answer to {ack.operation} {ack.order_id} is gone")
    finally:
        for opened_conn in conns.values():
            if opened_conn is not None:
                opened_conn.close()
    return problems


def _answer_held(conns: dict[str, apsw.Connection | None], ack: Answered) -> bool:
    conn = conns[f"{ack.db}.db"]
    if ack.operation == "CreateOrder":
        return bool(_rows(conn, "SELECT 1 FROM orders WHERE id = ?", ack.order_id))
    if ack.operation.startswith("UpdateOrderStatus:"):
        status = _rows(conn, "SELECT status FROM orders WHERE id = ?", ack.order_id)
        wanted = ack.operation.split(":", 1)[1]
        return bool(status) and (not ack.success or status[0][0] == wanted)
    journal = _rows(
        conn,
        "SELECT success FROM journal WHERE order_id = ? AND operation = ?",
        ack.order_id,
        ack.operation,
    )
    return bool(journal) and bool(journal[0][0]) == ack.success


@dataclass(frozen=True, slots=True)
class Verdict:
    problems: list[str]
    recovered: int = 0  # sagas that recovery found unfinished and finished


async def recover(folder: Path) -> Verdict:
    """A Runner claims every unfinished saga (every lease has run out by its clock) and
    drives it to its end; then the audit of the contract's invariants."""
    later = SystemClock().now_ms() + 3_600_000
    async with opened(folder, Synchronous.OFF) as world:
        runner = Runner(
            world.log,
            [world.definition],
            RunnerSettings(owner="recovery", lease_s=600, capacity=64, poll_s=0.01),
            clock=_Clock(lambda: later),
        )
        unfinished = len(
            world.log.list_sagas_sync(SagaFilter(statuses=ACTIVE_STATUSES), limit=10_000).items
        )
        await runner.start()
        try:
            async with asyncio.timeout(30):
                while True:
                    await runner.claim_now()
                    await runner.wait_idle()
                    busy = world.log.list_sagas_sync(SagaFilter(statuses=ACTIVE_STATUSES), limit=1)
                    if not busy.items:
                        break
                    await asyncio.sleep(0.01)
        finally:
            await runner.stop()
        report = audit(_snapshot(world))
    return Verdict([str(v) for v in report.violations], unfinished)


def _snapshot(world: World) -> Snapshot:
    records = world.log.list_sagas_sync(SagaFilter(definition=ORDER_SAGA), limit=10_000).items
    made = world.order.read_sync(lambda c: orders.list_orders(c, _ALL)).records
    held = world.inventory.read_sync(lambda c: inventory.list_reservations(c, _ALL)).records
    paid = world.payment.read_sync(lambda c: payments.list_payments(c, _ALL)).records
    stock = world.inventory.read_sync(inventory.stock)
    return Snapshot(
        sagas=[saga_row(r) for r in records],
        orders=[OrderRow(o.id, o.status.value, o.reason, o.total_cents) for o in made],
        reservations=[ReservationRow(r.order_id, r.state.value, r.items) for r in held],
        payments=[PaymentRow(p.order_id, p.state.value, p.amount_cents) for p in paid],
        initial_stock=dict(stock.initial),
        available_stock=dict(stock.available),
    )


async def check(folder: Path, acks: Sequence[Ack]) -> Verdict:
    """Everything wrong with `folder` given what had been acknowledged (see the module)."""
    lost = missing(folder, acks)
    return Verdict(lost) if lost else await recover(folder)
