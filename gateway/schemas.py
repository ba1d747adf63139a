"""The HTTP API's JSON shapes as pydantic models: they render responses and describe every
route's body and errors in /openapi.json. Conversions from engine values live here too
(`order_out`, `saga_out`), so routes only call them.

Money leaves as a JSON number of currency units (50.0), as the contract shows; inside it is
integer cents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from engine.core import Phase, SagaStatus, Transition
from engine.saga_log import SagaRecord, pruned_before
from orders.model import Order, OrderStatus

__all__ = [
    "ERROR_RESPONSES",
    "ErrorOut",
    "HealthOut",
    "ItemIn",
    "ItemOut",
    "OrderIn",
    "OrderOut",
    "OrderPage",
    "ReadyOut",
    "ReadyProblem",
    "SagaOut",
    "StepOut",
    "errors",
    "order_out",
    "rfc3339",
    "saga_out",
]


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch -> `2025-01-31T12:00:00.123Z`."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _money(cents: int) -> float:
    return cents / 100


class ErrorOut(BaseModel):
    """The error envelope of every 4xx and 5xx."""

    error: str = Field(description="a stable, machine-readable code", examples=["invalid_item"])
    message: str = Field(description="a human sentence saying what went wrong")


class ItemIn(BaseModel):
    """One line of POST /orders (documentation: the body is parsed by gateway/order_input.py,
    which reads the price exactly as written, never through a float)."""

    product_id: str = Field(
        min_length=1, max_length=128, description="one line per product", examples=["prod_1"]
    )
    quantity: int = Field(ge=1, le=1_000_000, examples=[1])
    price: float = Field(
        gt=0,
        multiple_of=0.01,
        description="unit price in currency units, a JSON number with at most 2 decimals",
        examples=[50.00],
    )


class OrderIn(BaseModel):
    """POST /orders body. Unknown fields are ignored."""

    customer_id: str = Field(min_length=1, max_length=128, examples=["cust_123"])
    items: list[ItemIn] = Field(min_length=1, max_length=1000)


class ItemOut(BaseModel):
    product_id: str
    quantity: int
    price: float = Field(description="unit price in currency units, e.g. 50.0")


class OrderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c3f0e-8a5b-4a1e-9a52-1f9b1b0d2c3e",
                    "customer_id": "cust_123",
                    "status": "PENDING",
                    "total": 50.0,
                    "reason": None,
                    "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.0}],
                    "created_at": "2025-01-31T12:00:00.123Z",
                    "updated_at": "2025-01-31T12:00:00.123Z",
                }
            ]
        }
    )

    id: str
    customer_id: str
    status: OrderStatus
    total: float = Field(description="sum of quantity x price, in currency units")
    reason: str | None = Field(
        description="why it was cancelled (out_of_stock, payment_declined, "
        "cancelled_by_operator, ...); null unless CANCELLED"
    )
    items: list[ItemOut]
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


class OrderPage(BaseModel):
    orders: list[OrderOut] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null at the end"
    )


class StepOut(BaseModel):
    seq: int = Field(description="position in the saga's log, from 1")
    step: str = Field(description="the step's name; empty for saga-level facts")
    phase: Phase
    attempt: int
    at: str = Field(description="RFC 3339, UTC")
    error: str | None
    trace_id: str | None


class SagaOut(BaseModel):
    id: str
    definition: str
    status: SagaStatus
    epoch: int = Field(description="fencing epoch: bumped by every claim and operator change")
    owner: str | None = Field(description="the process driving it now; null when unowned")
    trace_id: str | None
    reason: str | None = Field(description="why it compensated, or why it needs attention")
    created_at: str
    updated_at: str
    history_pruned: bool = Field(
        default=False,
        description="true when `saga prune` deleted its step history: steps then holds only "
        "the final transition",
    )
    steps: list[StepOut] = Field(description="every transition of its log, in order")


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyOut(BaseModel):
    status: str = Field(description="ready or not_ready")
    checks: dict[str, str] = Field(
        description="each dependency: ok, or what is wrong with it",
        examples=[{"saga_log": "ok", "order": "ok", "payment": "ok", "inventory": "ok"}],
    )


class ReadyProblem(ErrorOut):
    """503 from /readyz: the envelope, plus every check."""

    checks: dict[str, str]


def order_out(order: Order) -> OrderOut:
    req = order.request
    return OrderOut(
        id=order.id,
        customer_id=req.customer_id,
        status=order.status,
        total=_money(req.total_cents),
        reason=order.reason,
        items=[
            ItemOut(product_id=i.product_id, quantity=i.quantity, price=_money(i.unit_price_cents))
            for i in req.items
        ],
        created_at=rfc3339(order.created_ms),
        updated_at=rfc3339(order.updated_ms),
    )


def saga_out(record: SagaRecord, transitions: Sequence[Transition]) -> SagaOut:
    return SagaOut(
        id=record.id,
        definition=record.definition,
        status=record.status,
        epoch=record.epoch,
        owner=record.owner,
        trace_id=record.trace_id,
        reason=record.reason,
        created_at=rfc3339(record.created_ms),
        updated_at=rfc3339(record.updated_ms),
        history_pruned=pruned_before(transitions) is not None,
        steps=[
            StepOut(
                seq=t.seq,
                step=t.step,
                phase=t.phase,
                attempt=t.attempt,
                at=rfc3339(t.at_ms),
                error=t.error,
                trace_id=t.trace_id,
            )
            for t in transitions
        ],
    )


# Every error a route may answer, for OpenAPI: status -> description.
ERROR_RESPONSES: Final[Mapping[int, str]] = {
    400: "malformed input: invalid_json, invalid_request, invalid_item or invalid_cursor",
    401: "unauthorized: no bearer token",
    403: "forbidden: admin routes closed (no SAGA_ADMIN_TOKEN) or a wrong token",
    404: "order_not_found or saga_not_found",
    409: "conflict: the change does not apply to the saga in its state",
    413: "payload_too_large",
    415: "unsupported_media_type: send Content-Type: application/json",
    422: "idempotency_key_reused: the key was used with a different body",
    503: "unavailable (the saga log cannot be written) or overloaded; see Retry-After",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of the given error statuses (and 500, always)."""
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorOut, "description": ERROR_RESPONSES[s]} for s in statuses
    }
    out[500] = {"model": ErrorOut, "description": "internal: a bug; it has been logged"}
    return out
