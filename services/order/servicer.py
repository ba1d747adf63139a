"""The Order gRPC edge: proto -> checked values, the ledger through the Edge, values ->
proto. No rule lives here; see ledger.py."""

from __future__ import annotations

from typing import Final

import grpc.aio

from proto.order.v1 import order_pb2 as pb
from proto.order.v1 import order_pb2_grpc as pb_grpc
from services.common import validate
from services.common.edge import Edge
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import page_request
from services.common.server import ServiceSpec
from services.common.status import rpc
from services.order import ledger
from services.order.backends import OrderLedger, open_ledger
from services.settings import ServiceSettings

__all__ = ["OrderServicer", "spec"]

STATUSES: Final[dict[ledger.LedgerStatus, pb.Status.ValueType]] = {
    ledger.LedgerStatus.PENDING: pb.PENDING,
    ledger.LedgerStatus.CONFIRMED: pb.CONFIRMED,
    ledger.LedgerStatus.CANCELLED: pb.CANCELLED,
}
TERMINAL: Final[dict[int, ledger.LedgerStatus]] = {
    pb.CONFIRMED: ledger.LedgerStatus.CONFIRMED,
    pb.CANCELLED: ledger.LedgerStatus.CANCELLED,
}


class OrderServicer(pb_grpc.OrderServicer):
    def __init__(self, edge: Edge, ledger: OrderLedger) -> None:
        self.edge = edge
        self.ledger = ledger

    @rpc
    async def CreateOrder(
        self,
        request: pb.CreateOrderRequest,
        context: grpc.aio.ServicerContext[pb.CreateOrderRequest, pb.CreateOrderResponse],
    ) -> pb.CreateOrderResponse:
        order_id = validate.identifier("id", request.id)
        customer_id = validate.identifier("customer_id", request.customer_id)
        lines = [
            (product, quantity, validate.positive_cents(f"items[{i}].unit_price_cents", price))
            for i, ((product, quantity), price) in enumerate(
                zip(
                    validate.items("items", request.items),
                    (item.unit_price_cents for item in request.items),
                    strict=True,
                )
            )
        ]
        if ledger.total_cents(lines) > validate.MAX_CENTS:
            raise InvalidArgument("items", "the order's total does not fit in 64-bit cents")
        epoch = self.edge.epoch(context)
        order = await self.edge.write(
            "CreateOrder",
            context,
            lambda: self.ledger.create(order_id, epoch, customer_id, lines),
        )
        return pb.CreateOrderResponse(order=_info(order))

    @rpc
    async def GetOrder(
        self,
        request: pb.GetOrderRequest,
        context: grpc.aio.ServicerContext[pb.GetOrderRequest, pb.GetOrderResponse],
    ) -> pb.GetOrderResponse:
        order_id = validate.identifier("id", request.id)
        order = await self.edge.read("GetOrder", context, lambda: self.ledger.get(order_id))
        if order is None:
            raise NotFound(order_id)
        return pb.GetOrderResponse(order=_info(order))

    @rpc
    async def UpdateOrderStatus(
        self,
        request: pb.UpdateOrderStatusRequest,
        context: grpc.aio.ServicerContext[
            pb.UpdateOrderStatusRequest, pb.UpdateOrderStatusResponse
        ],
    ) -> pb.UpdateOrderStatusResponse:
        order_id = validate.identifier("id", request.id)
        status = TERMINAL.get(request.status)
        if status is None:
            name = {v: k for k, v in pb.Status.items()}.get(request.status, str(request.status))
            raise InvalidArgument(
                "status", f"{name} is not CONFIRMED or CANCELLED (an order never moves back)"
            )
        reason = validate.reason("reason", request.reason)
        epoch = self.edge.epoch(context)
        success = await self.edge.write(
            "UpdateOrderStatus",
            context,
            lambda: self.ledger.update_status(order_id, epoch, status, reason),
        )
        return pb.UpdateOrderStatusResponse(success=success)

    @rpc
    async def ListOrders(
        self,
        request: pb.ListOrdersRequest,
        context: grpc.aio.ServicerContext[pb.ListOrdersRequest, pb.ListOrdersResponse],
    ) -> pb.ListOrdersResponse:
        page = page_request(request.page_size, request.page_token)
        found = await self.edge.read("ListOrders", context, lambda: self.ledger.list_orders(page))
        return pb.ListOrdersResponse(
            orders=[_info(order) for order in found.records], next_page_token=found.next_token
        )


def _info(order: ledger.LedgerOrder) -> pb.OrderInfo:
    return pb.OrderInfo(
        id=order.id,
        customer_id=order.customer_id,
        items=[
            pb.OrderItem(product_id=product, quantity=quantity, unit_price_cents=price)
            for product, quantity, price in order.items
        ],
        status=STATUSES[order.status],
        total_cents=order.total_cents,
        reason=order.reason,
    )


def spec(settings: ServiceSettings) -> ServiceSpec[OrderLedger]:
    def register(server: grpc.aio.Server, edge: Edge, ledger: OrderLedger) -> None:
        pb_grpc.add_OrderServicer_to_server(OrderServicer(edge, ledger), server)

    return ServiceSpec(
        name=settings.name,
        service_names=(pb.DESCRIPTOR.services_by_name["Order"].full_name,),
        open_ledger=open_ledger,
        register=register,
    )
