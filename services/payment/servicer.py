"""The Payment gRPC edge: proto -> checked values, the ledger through the Edge, values ->
proto. No rule lives here; see ledger.py."""

from __future__ import annotations

from typing import Final

import grpc.aio

from proto.payment.v1 import payment_pb2 as pb
from proto.payment.v1 import payment_pb2_grpc as pb_grpc
from services.common import validate
from services.common.edge import Edge
from services.common.paging import page_request
from services.common.server import ServiceSpec
from services.common.status import rpc
from services.payment import ledger
from services.payment.backends import PaymentLedger, open_ledger
from services.settings import ServiceSettings

__all__ = ["PaymentServicer", "spec"]

STATES: Final[dict[ledger.PaymentState, pb.PaymentState.ValueType]] = {
    ledger.PaymentState.NONE: pb.PAYMENT_STATE_NONE,
    ledger.PaymentState.CHARGED: pb.PAYMENT_STATE_CHARGED,
    ledger.PaymentState.REFUNDED: pb.PAYMENT_STATE_REFUNDED,
    ledger.PaymentState.DECLINED: pb.PAYMENT_STATE_DECLINED,
}


class PaymentServicer(pb_grpc.PaymentServicer):
    def __init__(self, edge: Edge, ledger: PaymentLedger) -> None:
        self.edge = edge
        self.ledger = ledger

    @rpc
    async def Charge(
        self,
        request: pb.ChargeRequest,
        context: grpc.aio.ServicerContext[pb.ChargeRequest, pb.ChargeResponse],
    ) -> pb.ChargeResponse:
        order_id = validate.identifier("order_id", request.order_id)
        amount = validate.positive_cents("amount_cents", request.amount_cents)
        # customer_id is optional here (the order has it); when given it is kept for audits.
        customer_id = request.customer_id
        if customer_id:
            validate.identifier("customer_id", customer_id)
        epoch = self.edge.epoch(context)
        answer = await self.edge.write(
            "Charge",
            context,
            lambda: self.ledger.charge(order_id, epoch, amount, customer_id),
        )
        return pb.ChargeResponse(success=answer.success, reason=answer.reason)

    @rpc
    async def Refund(
        self,
        request: pb.RefundRequest,
        context: grpc.aio.ServicerContext[pb.RefundRequest, pb.RefundResponse],
    ) -> pb.RefundResponse:
        order_id = validate.identifier("order_id", request.order_id)
        epoch = self.edge.epoch(context)
        answer = await self.edge.write(
            "Refund", context, lambda: self.ledger.refund(order_id, epoch)
        )
        return pb.RefundResponse(success=answer.success)

    @rpc
    async def GetPayment(
        self,
        request: pb.GetPaymentRequest,
        context: grpc.aio.ServicerContext[pb.GetPaymentRequest, pb.GetPaymentResponse],
    ) -> pb.GetPaymentResponse:
        order_id = validate.identifier("order_id", request.order_id)
        found = await self.edge.read("GetPayment", context, lambda: self.ledger.payment(order_id))
        return pb.GetPaymentResponse(
            state=STATES[found.state], amount_cents=found.amount_cents, reason=found.reason
        )

    @rpc
    async def ListPayments(
        self,
        request: pb.ListPaymentsRequest,
        context: grpc.aio.ServicerContext[pb.ListPaymentsRequest, pb.ListPaymentsResponse],
    ) -> pb.ListPaymentsResponse:
        page = page_request(request.page_size, request.page_token)
        found = await self.edge.read(
            "ListPayments", context, lambda: self.ledger.list_payments(page)
        )
        return pb.ListPaymentsResponse(
            payments=[
                pb.PaymentRecord(
                    order_id=p.order_id,
                    state=STATES[p.state],
                    amount_cents=p.amount_cents,
                    customer_id=p.customer_id,
                    reason=p.reason,
                )
                for p in found.records
            ],
            next_page_token=found.next_token,
        )


def spec(settings: ServiceSettings) -> ServiceSpec[PaymentLedger]:
    def register(server: grpc.aio.Server, edge: Edge, ledger: PaymentLedger) -> None:
        pb_grpc.add_PaymentServicer_to_server(PaymentServicer(edge, ledger), server)

    return ServiceSpec(
        name=settings.name,
        service_names=(pb.DESCRIPTOR.services_by_name["Payment"].full_name,),
        open_ledger=open_ledger,
        register=register,
    )
