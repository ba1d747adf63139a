"""Spans as plain values, from the SDK's in-memory exporter or from OTLP protobufs, and
the questions the observability tests ask of them (one trace, who is whose parent)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

__all__ = ["Span", "Spans", "from_sdk"]


@dataclass(frozen=True, slots=True)
class Span:
    service: str  # resource service.name: saga-gateway, saga-order, …
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, …
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    attributes: Mapping[str, object] = field(default_factory=dict)


def from_sdk(spans: Iterable[ReadableSpan]) -> list[Span]:
    out = []
    for s in spans:
        ctx = s.context
        assert ctx is not None
        kind = s.kind if isinstance(s.kind, SpanKind) else SpanKind.INTERNAL
        out.append(
            Span(
                service=str(s.resource.attributes.get("service.name", "")),
                name=s.name,
                kind=kind.name,
                trace_id=f"{ctx.trace_id:032x}",
                span_id=f"{ctx.span_id:016x}",
                parent_id=f"{s.parent.span_id:016x}" if s.parent is not None else None,
                attributes=dict(s.attributes or {}),
            )
        )
    return out


class Spans:
    """A bag of spans from any number of processes."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.all = list(spans)
        self.by_id = {s.span_id: s for s in self.all}

    def named(self, name: str, service: str | None = None) -> list[Span]:
        return [s for s in self.all if s.name == name and (service is None or s.service == service)]

    def one(self, name: str, service: str | None = None) -> Span:
        found = self.named(name, service)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.describe()}"
        return found[0]

    def parent(self, span: Span) -> Span:
        assert span.parent_id is not None, f"{span.name} has no parent"
        parent = self.by_id.get(span.parent_id)
        assert parent is not None, f"{span.name}'s parent {span.parent_id} was not exported"
        return parent

    def of_trace(self, trace_id: str) -> Spans:
        return Spans([s for s in self.all if s.trace_id == trace_id])

    def describe(self) -> str:
        return "\n".join(
            f"  {s.service:16} {s.kind:8} {s.name:40} {s.trace_id} {s.span_id} <- {s.parent_id}"
            for s in self.all
        )


# Which participant RPC each step of the order saga makes.
STEP_RPCS: Mapping[str, tuple[str, str]] = {
    "create_order": ("saga-order", "/order.v1.Order/CreateOrder"),
    "reserve_stock": ("saga-inventory", "/inventory.v1.Inventory/Reserve"),
    "charge_payment": ("saga-payment", "/payment.v1.Payment/Charge"),
    "confirm_order": ("saga-order", "/order.v1.Order/UpdateOrderStatus"),
}
