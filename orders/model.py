"""Order values: what a client asks for and what it sees, in integer cents.

The saga log is where an order lives in the gateway: its request is the saga's payload
(canonical JSON, so the same order always has the same digest for idempotency) and its
status is derived from the saga's.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import StrEnum

from engine.core import SagaStatus
from engine.saga_log import SagaRecord

__all__ = ["Item", "Order", "OrderRequest", "OrderStatus", "order_status", "statuses_for"]

ORDER_SAGA = "order"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


_FROM_SAGA = {
    SagaStatus.RUNNING: OrderStatus.PENDING,
    SagaStatus.COMPENSATING: OrderStatus.PENDING,
    SagaStatus.NEEDS_ATTENTION: OrderStatus.PENDING,
    SagaStatus.COMPLETED: OrderStatus.CONFIRMED,
    SagaStatus.COMPENSATED: OrderStatus.CANCELLED,
}


def order_status(status: SagaStatus) -> OrderStatus:
    return _FROM_SAGA[status]


def statuses_for(status: OrderStatus) -> tuple[SagaStatus, ...]:
    """The saga statuses an order status covers (for listing by status)."""
    return tuple(s for s, o in _FROM_SAGA.items() if o is status)


@dataclass(frozen=True, slots=True)
class Item:
    product_id: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    customer_id: str
    items: tuple[Item, ...]

    @property
    def total_cents(self) -> int:
        return sum(i.quantity * i.unit_price_cents for i in self.items)

    def to_payload(self) -> bytes:
        doc = {
            "customer_id": self.customer_id,
            "items": [
                {"product_id": i.product_id, "quantity": i.quantity,
                 "unit_price_cents": i.unit_price_cents}
                for i in self.items
            ],
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> OrderRequest:
        return _decoded(payload)


# A saga's payload is read by each of its steps and again for its answers: the same bytes
# object each time, whose hash CPython keeps, so a hit costs a lookup, not a parse. The
# value is frozen, so sharing it is safe; orders alike share one entry.
@functools.lru_cache(maxsize=4096)
def _decoded(payload: bytes) -> OrderRequest:
    doc = json.loads(payload)
    return OrderRequest(
        customer_id=str(doc["customer_id"]),
        items=tuple(
            Item(str(i["product_id"]), int(i["quantity"]), int(i["unit_price_cents"]))
            for i in doc["items"]
        ),
    )


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    request: OrderRequest
    status: OrderStatus
    reason: str | None
    created_ms: int
    updated_ms: int

    @classmethod
    def from_saga(cls, record: SagaRecord) -> Order:
        status = order_status(record.status)
        return cls(
            id=record.id,
            request=OrderRequest.from_payload(record.payload),
            status=status,
            # Only a cancelled order has a reason; a parked one is still PENDING to clients.
            reason=record.reason if status is OrderStatus.CANCELLED else None,
            created_ms=record.created_ms,
            updated_ms=record.updated_ms,
        )
