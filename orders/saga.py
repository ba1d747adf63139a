"""The order saga: create order -> reserve stock -> charge payment (pivot) -> confirm.

One definition of the generic engine, living with its user. Reasons for a cancelled
order come from the participants (`out_of_stock`, `unknown_product`, `payment_declined`)
or from the engine (`order_service_unavailable`, `inventory_unavailable` when a step
before the pivot keeps failing; `cancelled_by_operator`).

Compensations are written so that they are safe when the action never arrived:
- cancelling the order first creates it (idempotent) so that the Order service always
  ends agreeing with the log, then moves it PENDING -> CANCELLED with the saga's reason;
- Release and Refund leave tombstones, so a late Reserve or Charge is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.config import env_float, env_int
from engine.definition import (
    Done,
    Refused,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from orders.errors import CallRefused, NoParticipants
from orders.model import ORDER_SAGA, OrderRequest
from orders.participants import Participants
from proto.inventory.v1 import inventory_pb2
from proto.order.v1 import order_pb2

__all__ = [
    "ORDER_SAGA",
    "STEP_NAMES",
    "OrderSagaPolicy",
    "order_saga",
    "order_saga_shape",
]

STEP_NAMES = ("create_order", "reserve_stock", "charge_payment", "confirm_order")


@dataclass(frozen=True, slots=True)
class OrderSagaPolicy:
    """Retry budgets: before the pivot a step gives up (and the order is cancelled) after
    `max_attempts`; the pivot, the confirmation and compensations go on and park after
    `park_after` attempts (about a minute with the default backoff)."""

    max_attempts: int = 6
    park_after: int = 40
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    step_timeout_s: float = 5.0
    max_stalled_claims: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OrderSagaPolicy:
        """The gateway and the recovery daemon read the same variables, so that a saga is
        driven by the same budgets whoever drives it."""
        d = cls()
        return cls(
            max_attempts=env_int(env, "SAGA_STEP_MAX_ATTEMPTS", d.max_attempts, minimum=1),
            park_after=env_int(env, "SAGA_PARK_AFTER", d.park_after, minimum=1),
            initial_backoff_s=env_float(env, "SAGA_INITIAL_BACKOFF_S", d.initial_backoff_s),
            max_backoff_s=env_float(
                env,
                "SAGA_MAX_BACKOFF_S",
                d.max_backoff_s,
                minimum=env_float(env, "SAGA_INITIAL_BACKOFF_S", d.initial_backoff_s),
            ),
            step_timeout_s=env_float(env, "SAGA_STEP_TIMEOUT_S", d.step_timeout_s, minimum=0.01),
            max_stalled_claims=env_int(
                env, "SAGA_MAX_STALLED_CLAIMS", d.max_stalled_claims, minimum=1
            ),
        )

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            park_after=self.park_after,
            initial_backoff_s=self.initial_backoff_s,
            max_backoff_s=self.max_backoff_s,
        )


class _Steps:
    """The actions and compensations, bound to one set of participant clients (or to none:
    a definition that is only folded and decided on, never run)."""

    def __init__(self, participants: Participants | None) -> None:
        self._p = participants

    @property
    def p(self) -> Participants:
        if self._p is None:
            raise NoParticipants("this order saga definition reads logs only: it has no clients")
        return self._p

    @staticmethod
    def _order(ctx: StepContext) -> OrderRequest:
        return OrderRequest.from_payload(ctx.payload)

    async def _ensure_order(self, ctx: StepContext, order: OrderRequest) -> None:
        items = [
            order_pb2.OrderItem(
                product_id=i.product_id, quantity=i.quantity, unit_price_cents=i.unit_price_cents
            )
            for i in order.items
        ]
        await self.p.create_order(ctx.saga_id, order.customer_id, items, ctx.epoch)

    async def create_order(self, ctx: StepContext) -> StepResult:
        try:
            await self._ensure_order(ctx, self._order(ctx))
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done()

    async def cancel_order(self, ctx: StepContext) -> StepResult:
        reason = ctx.reason or "cancelled"
        try:
            await self._ensure_order(ctx, self._order(ctx))
            ok = await self.p.set_order_status(ctx.saga_id, order_pb2.CANCELLED, reason, ctx.epoch)
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done() if ok else Refused("order_not_cancellable")

    async def reserve_stock(self, ctx: StepContext) -> StepResult:
        order = self._order(ctx)
        items = [
            inventory_pb2.StockItem(product_id=i.product_id, quantity=i.quantity)
            for i in order.items
        ]
        try:
            resp = await self.p.reserve(ctx.saga_id, items, ctx.epoch)
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done() if resp.success else Refused(resp.reason or "reservation_rejected")

    async def release_stock(self, ctx: StepContext) -> StepResult:
        try:
            ok = await self.p.release(ctx.saga_id, ctx.epoch)
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done() if ok else Refused("release_refused")

    async def charge_payment(self, ctx: StepContext) -> StepResult:
        order = self._order(ctx)
        try:
            resp = await self.p.charge(ctx.saga_id, order.total_cents, order.customer_id, ctx.epoch)
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done() if resp.success else Refused(resp.reason or "payment_declined")

    async def confirm_order(self, ctx: StepContext) -> StepResult:
        try:
            ok = await self.p.set_order_status(ctx.saga_id, order_pb2.CONFIRMED, "", ctx.epoch)
        except CallRefused as exc:
            return Refused(exc.reason)
        return Done() if ok else Refused("order_not_pending")


def order_saga(participants: Participants, policy: OrderSagaPolicy | None = None) -> SagaDefinition:
    return _definition(_Steps(participants), policy or OrderSagaPolicy())


def order_saga_shape(policy: OrderSagaPolicy | None = None) -> SagaDefinition:
    """The same definition without participant clients, for tools that fold a saga's log and
    ask the core what comes next but never call a service (the operator commands). Building
    `Participants` would open gRPC channels, which need a running event loop."""
    return _definition(_Steps(None), policy or OrderSagaPolicy())


def _definition(s: _Steps, policy: OrderSagaPolicy) -> SagaDefinition:
    retry, timeout = policy.retry, policy.step_timeout_s
    return SagaDefinition(
        ORDER_SAGA,
        steps=(
            Step(
                "create_order",
                s.create_order,
                s.cancel_order,
                StepKind.COMPENSATABLE,
                retry,
                timeout,
                exhausted_reason="order_service_unavailable",
                always_compensate=True,
            ),
            Step(
                "reserve_stock",
                s.reserve_stock,
                s.release_stock,
                StepKind.COMPENSATABLE,
                retry,
                timeout,
                exhausted_reason="inventory_unavailable",
            ),
            Step("charge_payment", s.charge_payment, None, StepKind.PIVOT, retry, timeout),
            Step("confirm_order", s.confirm_order, None, StepKind.RETRIABLE, retry, timeout),
        ),
        max_stalled_claims=policy.max_stalled_claims,
    )
