"""Reads the audit's snapshot: every order saga from the log, and every order,
reservation, payment and stock figure from the services' read-only audit queries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc

from engine.core import ACTIVE_STATUSES
from engine.log_settings import LogBackend, SagaLogSettings
from engine.saga_log import SagaFilter, SagaPage, SagaRecord
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from engine.sync_log import SyncSagaLog
from orders.audit import OrderRow, PaymentRow, ReservationRow, SagaRow, Snapshot
from orders.channels import sync_channel
from orders.errors import AuditUnavailable
from orders.model import ORDER_SAGA, OrderRequest
from orders.participants import ServiceAddresses
from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from proto.order.v1 import order_pb2, order_pb2_grpc
from proto.payment.v1 import payment_pb2, payment_pb2_grpc

__all__ = ["read_snapshot", "saga_row", "wait_until_settled"]

PAGE = 1000


class _Paged(Protocol):
    next_page_token: str


R = TypeVar("R", bound=_Paged)


def _pages(fetch: Callable[[str], R]) -> Iterator[R]:
    token = ""
    while True:
        page = fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return


class _Reads(Protocol):
    def list_sagas_sync(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage: ...

    def close_sync(self) -> None: ...


def _open(where: Path | SagaLogSettings) -> _Reads:
    """The log to read: a SQLite file (read-only: the audit never takes the write lock of
    a live system), or the log the settings name (SAGA_DATABASE_URL)."""
    if isinstance(where, Path):
        return SqliteSagaLog.open_readonly(DbConfig(where))
    if where.backend is LogBackend.POSTGRES:
        return SyncSagaLog.open(where)
    return SqliteSagaLog.open_readonly(where.db)


def _saga_rows(log: _Reads) -> list[SagaRow]:
    rows: list[SagaRow] = []
    cursor: str | None = None
    while True:
        page = log.list_sagas_sync(SagaFilter(definition=ORDER_SAGA), limit=PAGE, cursor=cursor)
        rows += [saga_row(r) for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return rows


def saga_row(record: SagaRecord) -> SagaRow:
    """What the audit judges of one order saga."""
    order = OrderRequest.from_payload(record.payload)
    return SagaRow(
        id=record.id,
        status=record.status,
        reason=record.reason,
        idempotency_key=record.idempotency_key,
        items=tuple((i.product_id, i.quantity) for i in order.items),
        total_cents=order.total_cents,
    )


@dataclass(frozen=True, slots=True)
class _Stubs:
    order: order_pb2_grpc.OrderStub
    payment: payment_pb2_grpc.PaymentStub
    inventory: inventory_pb2_grpc.InventoryStub


def _read_services(
    stubs: _Stubs, timeout: float
) -> tuple[list[OrderRow], list[ReservationRow], list[PaymentRow], dict[str, int], dict[str, int]]:
    orders = [
        OrderRow(o.id, order_pb2.Status.Name(o.status), o.reason, o.total_cents)
        for page in _pages(
            lambda t: stubs.order.ListOrders(
                order_pb2.ListOrdersRequest(page_size=PAGE, page_token=t), timeout=timeout
            )
        )
        for o in page.orders
    ]
    reservations = [
        ReservationRow(
            r.order_id,
            inventory_pb2.ReservationState.Name(r.state).removeprefix("RESERVATION_STATE_"),
            tuple((i.product_id, i.quantity) for i in r.items),
        )
        for page in _pages(
            lambda t: stubs.inventory.ListReservations(
                inventory_pb2.ListReservationsRequest(page_size=PAGE, page_token=t),
                timeout=timeout,
            )
        )
        for r in page.reservations
    ]
    payments = [
        PaymentRow(
            p.order_id,
            payment_pb2.PaymentState.Name(p.state).removeprefix("PAYMENT_STATE_"),
            p.amount_cents,
        )
        for page in _pages(
            lambda t: stubs.payment.ListPayments(
                payment_pb2.ListPaymentsRequest(page_size=PAGE, page_token=t), timeout=timeout
            )
        )
        for p in page.payments
    ]
    stock = stubs.inventory.GetStock(inventory_pb2.GetStockRequest(), timeout=timeout)
    return orders, reservations, payments, dict(stock.initial), dict(stock.available)


def read_snapshot(
    log_at: Path | SagaLogSettings, services: ServiceAddresses, *, timeout: float = 10.0
) -> Snapshot:
    """`log_at`: the SQLite file, or the settings naming the log."""
    log = _open(log_at)
    channels = [
        sync_channel(t, services.tls)
        for t in (services.order, services.payment, services.inventory)
    ]
    try:
        sagas = _saga_rows(log)
        stubs = _Stubs(
            order_pb2_grpc.OrderStub(channels[0]),
            payment_pb2_grpc.PaymentStub(channels[1]),
            inventory_pb2_grpc.InventoryStub(channels[2]),
        )
        try:
            orders, reservations, payments, initial, available = _read_services(stubs, timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise AuditUnavailable(
                f"cannot read the services ({getattr(code, 'name', code)}): {detail}"
            ) from exc
    finally:
        for ch in channels:
            ch.close()
        log.close_sync()
    return Snapshot(sagas, orders, reservations, payments, initial, available)


def wait_until_settled(log_at: Path | SagaLogSettings, timeout_s: float) -> bool:
    """Wait (up to timeout_s) until no order saga is RUNNING or COMPENSATING."""
    log = _open(log_at)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            page = log.list_sagas_sync(
                SagaFilter(definition=ORDER_SAGA, statuses=ACTIVE_STATUSES), limit=1
            )
            if not page.items:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
    finally:
        log.close_sync()
