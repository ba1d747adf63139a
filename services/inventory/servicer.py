"""The Inventory gRPC edge: proto -> checked values, the ledger through the Edge, values ->
proto. No rule lives here; see ledger.py."""

from __future__ import annotations

from typing import Final

import grpc.aio

from proto.inventory.v1 import inventory_pb2 as pb
from proto.inventory.v1 import inventory_pb2_grpc as pb_grpc
from services.common import validate
from services.common.edge import Edge
from services.common.errors import InvalidArgument
from services.common.paging import page_request
from services.common.server import ServiceSpec
from services.common.status import rpc
from services.inventory import ledger
from services.inventory.backends import InventoryLedger, open_ledger
from services.settings import ServiceSettings

__all__ = ["InventoryServicer", "spec"]

STATES: Final[dict[ledger.ReservationState, pb.ReservationState.ValueType]] = {
    ledger.ReservationState.NONE: pb.RESERVATION_STATE_NONE,
    ledger.ReservationState.RESERVED: pb.RESERVATION_STATE_RESERVED,
    ledger.ReservationState.RELEASED: pb.RESERVATION_STATE_RELEASED,
    ledger.ReservationState.REJECTED: pb.RESERVATION_STATE_REJECTED,
}


class InventoryServicer(pb_grpc.InventoryServicer):
    def __init__(self, edge: Edge, ledger: InventoryLedger) -> None:
        self.edge = edge
        self.ledger = ledger

    @rpc
    async def Reserve(
        self,
        request: pb.ReserveRequest,
        context: grpc.aio.ServicerContext[pb.ReserveRequest, pb.ReserveResponse],
    ) -> pb.ReserveResponse:
        order_id = validate.identifier("order_id", request.order_id)
        lines = validate.items("items", request.items)
        epoch = self.edge.epoch(context)
        answer = await self.edge.write(
            "Reserve", context, lambda: self.ledger.reserve(order_id, epoch, lines)
        )
        return pb.ReserveResponse(success=answer.success, reason=answer.reason)

    @rpc
    async def Release(
        self,
        request: pb.ReleaseRequest,
        context: grpc.aio.ServicerContext[pb.ReleaseRequest, pb.ReleaseResponse],
    ) -> pb.ReleaseResponse:
        order_id = validate.identifier("order_id", request.order_id)
        epoch = self.edge.epoch(context)
        answer = await self.edge.write(
            "Release", context, lambda: self.ledger.release(order_id, epoch)
        )
        return pb.ReleaseResponse(success=answer.success)

    @rpc
    async def GetStock(
        self,
        request: pb.GetStockRequest,
        context: grpc.aio.ServicerContext[pb.GetStockRequest, pb.GetStockResponse],
    ) -> pb.GetStockResponse:
        if len(request.product_ids) > validate.MAX_ITEMS:
            raise InvalidArgument(
                "product_ids", f"names {len(request.product_ids)}; at most {validate.MAX_ITEMS}"
            )
        product_ids = [
            validate.identifier(f"product_ids[{i}]", product)
            for i, product in enumerate(request.product_ids)
        ]
        view = await self.edge.read("GetStock", context, lambda: self.ledger.stock(product_ids))
        return pb.GetStockResponse(
            available=view.available, initial=view.initial, reserved=view.reserved
        )

    @rpc
    async def GetReservation(
        self,
        request: pb.GetReservationRequest,
        context: grpc.aio.ServicerContext[pb.GetReservationRequest, pb.GetReservationResponse],
    ) -> pb.GetReservationResponse:
        order_id = validate.identifier("order_id", request.order_id)
        found = await self.edge.read(
            "GetReservation", context, lambda: self.ledger.reservation(order_id)
        )
        return pb.GetReservationResponse(
            state=STATES[found.state], items=_items(found.items), reason=found.reason
        )

    @rpc
    async def ListReservations(
        self,
        request: pb.ListReservationsRequest,
        context: grpc.aio.ServicerContext[pb.ListReservationsRequest, pb.ListReservationsResponse],
    ) -> pb.ListReservationsResponse:
        page = page_request(request.page_size, request.page_token)
        found = await self.edge.read(
            "ListReservations", context, lambda: self.ledger.list_reservations(page)
        )
        return pb.ListReservationsResponse(
            reservations=[
                pb.Reservation(
                    order_id=r.order_id,
                    state=STATES[r.state],
                    items=_items(r.items),
                    reason=r.reason,
                )
                for r in found.records
            ],
            next_page_token=found.next_token,
        )


def _items(lines: tuple[ledger.StockLine, ...]) -> list[pb.StockItem]:
    return [pb.StockItem(product_id=product, quantity=quantity) for product, quantity in lines]


def spec(settings: ServiceSettings) -> ServiceSpec[InventoryLedger]:
    """The inventory service: its ledger (seeded when new) and its servicer."""

    def register(server: grpc.aio.Server, edge: Edge, ledger: InventoryLedger) -> None:
        pb_grpc.add_InventoryServicer_to_server(InventoryServicer(edge, ledger), server)

    return ServiceSpec(
        name=settings.name,
        service_names=(pb.DESCRIPTOR.services_by_name["Inventory"].full_name,),
        open_ledger=open_ledger,
        register=register,
    )
