"""The contract's invariants, checked across the saga log and the three services.

`audit(snapshot)` is pure: it takes what was read (every order saga from the log, every
order, reservation and payment from the services' audit queries, the stock) and returns
each violation with the order id and what differs. `orders/audit_io.py` reads the
snapshot; `saga audit` prints the result and exits non-zero on any violation.

For every order that ever got a 201 (every order saga in the log):
1. it ended CONFIRMED or CANCELLED, and the log and the Order service agree (status and
   reason);
2. CONFIRMED: its reservation is RESERVED with its items; its payment CHARGED with
   exactly its total;
3. CANCELLED: nothing reserved (RELEASED, REJECTED or NONE), nothing charged (REFUNDED,
   DECLINED or NONE);
4. stock is conserved: initial = available + RESERVED quantities, never negative;
5. money is conserved: sum of CHARGED = sum of totals of CONFIRMED orders;
6. one idempotency key, one order; one order, at most one charge; nothing reserved or
   charged for an order the log never acknowledged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.core import SagaStatus

__all__ = [
    "AuditReport",
    "OrderRow",
    "PaymentRow",
    "ReservationRow",
    "SagaRow",
    "Snapshot",
    "Violation",
    "audit",
]


@dataclass(frozen=True, slots=True)
class SagaRow:
    """An order as the saga log knows it."""

    id: str
    status: SagaStatus
    reason: str | None
    idempotency_key: str | None
    items: tuple[tuple[str, int], ...]  # (product_id, quantity)
    total_cents: int


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: str
    status: str  # PENDING, CONFIRMED, CANCELLED
    reason: str
    total_cents: int


@dataclass(frozen=True, slots=True)
class ReservationRow:
    order_id: str
    state: str  # NONE, RESERVED, RELEASED, REJECTED
    items: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class PaymentRow:
    order_id: str
    state: str  # NONE, CHARGED, REFUNDED, DECLINED
    amount_cents: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    sagas: Sequence[SagaRow]
    orders: Sequence[OrderRow]
    reservations: Sequence[ReservationRow]
    payments: Sequence[PaymentRow]
    initial_stock: Mapping[str, int]
    available_stock: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: int
    subject: str  # an order id, or "product <id>", or "money"
    message: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.message}"


@dataclass(frozen=True, slots=True)
class AuditReport:
    orders: int
    by_status: dict[str, int]
    violations: tuple[Violation, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations


_EXPECTED_ORDER = {SagaStatus.COMPLETED: "CONFIRMED", SagaStatus.COMPENSATED: "CANCELLED"}
_NOTHING_RESERVED = {"RELEASED", "REJECTED", "NONE"}
_NOTHING_CHARGED = {"REFUNDED", "DECLINED", "NONE"}


def _items(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for product, qty in pairs:
        out[product] += qty
    return dict(out)


def _check_order(
    saga: SagaRow,
    order: OrderRow | None,
    reservation: ReservationRow | None,
    payment: PaymentRow | None,
) -> list[Violation]:
    v: list[Violation] = []

    def bad(invariant: int, message: str) -> None:
        v.append(Violation(invariant, f"order {saga.id}", message))

    expected = _EXPECTED_ORDER.get(saga.status)
    if expected is None:
        why = f" ({saga.reason})" if saga.reason else ""
        bad(1, f"not finished: the saga is {saga.status.value}{why}")
        return v
    if order is None:
        bad(1, f"the log says {expected} but the Order service has no such order")
    else:
        if order.status != expected:
            bad(1, f"the log says {expected}, the Order service says {order.status}")
        if expected == "CANCELLED" and (order.reason or None) != saga.reason:
            bad(1, f"cancel reason differs: log {saga.reason!r}, Order service {order.reason!r}")
        if order.total_cents != saga.total_cents:
            bad(1, f"total differs: log {saga.total_cents}, Order service {order.total_cents}")
    r_state = reservation.state if reservation else "NONE"
    p_state = payment.state if payment else "NONE"
    if expected == "CONFIRMED":
        if r_state != "RESERVED":
            bad(2, f"confirmed but its reservation is {r_state}")
        elif reservation is not None and _items(reservation.items) != _items(saga.items):
            bad(2, f"reserved {_items(reservation.items)} but ordered {_items(saga.items)}")
        if p_state != "CHARGED":
            bad(2, f"confirmed but its payment is {p_state}")
        elif payment is not None and payment.amount_cents != saga.total_cents:
            bad(2, f"charged {payment.amount_cents} cents for a total of {saga.total_cents}")
    else:
        if r_state not in _NOTHING_RESERVED:
            bad(3, f"cancelled but its reservation is {r_state}")
        if p_state not in _NOTHING_CHARGED:
            bad(3, f"cancelled but its payment is {p_state}")
    return v


def audit(snap: Snapshot) -> AuditReport:
    violations: list[Violation] = []
    sagas = {s.id: s for s in snap.sagas}
    orders = {o.id: o for o in snap.orders}
    reservations = {r.order_id: r for r in snap.reservations}
    payments: dict[str, PaymentRow] = {}
    for p in snap.payments:
        if p.order_id in payments:
            violations.append(Violation(6, f"order {p.order_id}", "more than one payment"))
        payments[p.order_id] = p

    for saga in snap.sagas:
        violations += _check_order(
            saga, orders.get(saga.id), reservations.get(saga.id), payments.get(saga.id)
        )

    # 6: one key, one order; no effect for an order the log never acknowledged.
    keys = Counter(s.idempotency_key for s in snap.sagas if s.idempotency_key)
    for key, n in keys.items():
        if n > 1:
            violations.append(Violation(6, f"key {key!r}", f"{n} orders for one key"))
    for r in snap.reservations:
        if r.order_id not in sagas and r.state == "RESERVED":
            violations.append(
                Violation(6, f"order {r.order_id}", "stock reserved for an order the log lacks")
            )
    for p in snap.payments:
        if p.order_id not in sagas and p.state == "CHARGED":
            violations.append(
                Violation(6, f"order {p.order_id}", "money charged for an order the log lacks")
            )

    # 4: stock is conserved, from the reservations themselves.
    reserved: defaultdict[str, int] = defaultdict(int)
    for r in snap.reservations:
        if r.state == "RESERVED":
            for product, qty in r.items:
                reserved[product] += qty
    for product in sorted(set(snap.initial_stock) | set(snap.available_stock) | set(reserved)):
        initial = snap.initial_stock.get(product, 0)
        available = snap.available_stock.get(product, 0)
        if available < 0:
            violations.append(Violation(4, f"product {product}", f"available is {available}"))
        if initial != available + reserved[product]:
            violations.append(
                Violation(
                    4, f"product {product}",
                    f"initial {initial} != available {available} + reserved {reserved[product]}",
                )
            )  # fmt: skip

    # 5: money is conserved.
    charged = sum(p.amount_cents for p in snap.payments if p.state == "CHARGED")
    confirmed = sum(s.total_cents for s in snap.sagas if s.status is SagaStatus.COMPLETED)
    if charged != confirmed:
        violations.append(
            Violation(5, "money", f"charged {charged} cents, confirmed orders total {confirmed}")
        )

    by_status = Counter(
        _EXPECTED_ORDER.get(s.status, f"PENDING ({s.status.value})") for s in snap.sagas
    )
    return AuditReport(len(snap.sagas), dict(by_status), tuple(violations))
