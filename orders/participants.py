"""gRPC clients of the three participant services, as the order saga's steps use them.

Every mutating call carries the saga's epoch (`x-saga-epoch`) so that a participant can
refuse a stale owner. gRPC outcomes are translated here, in one table: a transient status
becomes TransientStepError (retried; the outcome may be unknown), ABORTED becomes
StaleEpoch (stop touching this saga), anything else that says the request is wrong is a
business refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate
from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters
from opentelemetry.trace import TracerProvider

from engine.errors import StaleEpoch, TransientStepError
from engine.net import Target, TlsFiles, check_server_name, env_target, env_tls
from engine.telemetry import exports
from orders.channels import aio_channel
from orders.errors import CallRefused
from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from proto.order.v1 import order_pb2, order_pb2_grpc
from proto.payment.v1 import payment_pb2, payment_pb2_grpc

__all__ = ["Participants", "ServiceAddresses"]

T = TypeVar("T")

TRANSIENT: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class ServiceAddresses:
    """Where the three services are (each one address, replicas or a dns: name), and the
    mutual-TLS files to call them with (None: plaintext)."""

    order: Target
    payment: Target
    inventory: Target
    tls: TlsFiles | None = field(default=None, kw_only=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceAddresses:
        targets = {
            var: env_target(env, var, default)
            for var, default in (
                ("ORDER_SERVICE_ADDR", "127.0.0.1:9090"),
                ("PAYMENT_SERVICE_ADDR", "127.0.0.1:9091"),
                ("INVENTORY_SERVICE_ADDR", "127.0.0.1:9092"),
            )
        }
        tls = env_tls(env)
        check_server_name(targets, tls)
        order, payment, inventory = targets.values()
        return cls(order, payment, inventory, tls=tls)


async def _call(service: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except aio.AioRpcError as exc:
        code = exc.code()
        detail = exc.details() or code.name
        if code is grpc.StatusCode.ABORTED:
            raise StaleEpoch(f"{service}: {detail}") from exc
        if code in TRANSIENT:
            raise TransientStepError(f"{service} {code.name}: {detail}") from exc
        raise CallRefused(f"{service}_rejected", f"{code.name}: {detail}") from exc


# A connection whose peer vanished without a word (its host lost power, a firewall or a NAT
# forgot the flow, a proxy in between still accepts bytes) is a half-open socket: nothing
# closes it for many minutes, or ever, and every call on it times out, after the service is
# back too. Keepalive pings find it: one goes out while calls are in flight and nothing has
# been read for 10 s; unanswered for 5 s, the connection is dropped and the channel
# reconnects (docs/reliability.md#network-faults). grpc-core obeys `ping_timeout_ms`;
# `keepalive_timeout_ms` is the documented name: both are set.
KEEPALIVE: Final = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),  # go on pinging a server that sends nothing
)

# The gRPC service each participant serves, as it reports it to the standard health check.
SERVICE_NAMES: Final = (
    ("order", order_pb2.DESCRIPTOR.services_by_name["Order"].full_name),
    ("payment", payment_pb2.DESCRIPTOR.services_by_name["Payment"].full_name),
    ("inventory", inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].full_name),
)


class Participants:
    """One channel per service, shared by every saga in the process."""

    def __init__(
        self,
        addresses: ServiceAddresses,
        *,
        call_timeout_s: float = 5.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """`tracer_provider`: where the client spans go (the process's global one when
        None)."""
        self.addresses = addresses
        self._timeout = call_timeout_s
        # OpenTelemetry's client interceptors make a client span per call, a child of the
        # step attempt's span, and put it in `traceparent`. Health checks (/readyz) are
        # not part of any order's story: no spans. With no exporter, `_md` puts the
        # attempt's own span in `traceparent` instead (engine.telemetry.exports).
        self._inject = not exports(tracer_provider)
        tracing = (
            []
            if self._inject
            else aio_client_interceptors(  # type: ignore[no-untyped-call]
                tracer_provider=tracer_provider,
                filter_=filters.negate(filters.health_check()),
            )
        )
        self._channels = [
            aio_channel(t, addresses.tls, options=KEEPALIVE, interceptors=tracing)
            for t in (addresses.order, addresses.payment, addresses.inventory)
        ]
        order_ch, payment_ch, inventory_ch = self._channels
        self.order = order_pb2_grpc.OrderStub(order_ch)
        self.payment = payment_pb2_grpc.PaymentStub(payment_ch)
        self.inventory = inventory_pb2_grpc.InventoryStub(inventory_ch)

    def _md(self, epoch: int) -> tuple[tuple[str, str], ...]:
        if not self._inject:
            return (("x-saga-epoch", str(epoch)),)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return (("x-saga-epoch", str(epoch)), *carrier.items())

    async def create_order(
        self, order_id: str, customer_id: str, items: list[order_pb2.OrderItem], epoch: int
    ) -> order_pb2.OrderInfo:
        req = order_pb2.CreateOrderRequest(id=order_id, customer_id=customer_id, items=items)
        resp = await _call(
            "order", self.order.CreateOrder(req, metadata=self._md(epoch), timeout=self._timeout)
        )
        return resp.order

    async def set_order_status(
        self, order_id: str, status: order_pb2.Status.ValueType, reason: str, epoch: int
    ) -> bool:
        req = order_pb2.UpdateOrderStatusRequest(id=order_id, status=status, reason=reason)
        resp = await _call(
            "order",
            self.order.UpdateOrderStatus(req, metadata=self._md(epoch), timeout=self._timeout),
        )
        return resp.success

    async def reserve(
        self, order_id: str, items: list[inventory_pb2.StockItem], epoch: int
    ) -> inventory_pb2.ReserveResponse:
        req = inventory_pb2.ReserveRequest(order_id=order_id, items=items)
        return await _call(
            "inventory",
            self.inventory.Reserve(req, metadata=self._md(epoch), timeout=self._timeout),
        )

    async def release(self, order_id: str, epoch: int) -> bool:
        req = inventory_pb2.ReleaseRequest(order_id=order_id)
        resp = await _call(
            "inventory",
            self.inventory.Release(req, metadata=self._md(epoch), timeout=self._timeout),
        )
        return resp.success

    async def charge(
        self, order_id: str, amount_cents: int, customer_id: str, epoch: int
    ) -> payment_pb2.ChargeResponse:
        req = payment_pb2.ChargeRequest(
            order_id=order_id, amount_cents=amount_cents, customer_id=customer_id
        )
        return await _call(
            "payment", self.payment.Charge(req, metadata=self._md(epoch), timeout=self._timeout)
        )

    async def health(self, timeout_s: float) -> dict[str, str]:
        """Each service's standard gRPC health check, at once: "ok", or what is wrong."""

        async def check(channel: aio.Channel, service: str) -> str:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
                )
            except aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details() or 'no answer'}"
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            return "ok"

        results = await asyncio.gather(
            *(
                check(ch, service)
                for ch, (_, service) in zip(self._channels, SERVICE_NAMES, strict=True)
            )
        )
        return {name: r for (name, _), r in zip(SERVICE_NAMES, results, strict=True)}

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close(None)
