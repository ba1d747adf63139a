"""Order routes: JSON <-> engine values, the engine's call, back again. Nothing decides here:
input rules are in gateway/order_input.py, errors in gateway/errors.py, idempotency in
engine/idempotency.py, and the saga in engine/runner.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request, Response

from engine.errors import CommitOutcomeUnknown, EngineError, Overloaded, StorageError
from engine.idempotency import StartOutcome, recognise, start_once
from engine.saga_log import NewSaga, SagaFilter
from engine.tracing import current_trace_id
from gateway.context import Gateway, gateway
from gateway.errors import ApiError, public_code
from gateway.order_input import idempotency_key, is_json_media_type, parse_order
from gateway.schemas import OrderOut, OrderPage, errors, order_out
from orders.model import ORDER_SAGA, Order, OrderRequest, OrderStatus, statuses_for

__all__ = ["router"]

router = APIRouter(tags=["orders"])

GW = Annotated[Gateway, Depends(gateway)]
MAX_PAGE: Final = 100
RETRY_AFTER_S: Final = "1"

_CREATED_HEADERS: Final = {
    "Location": {"description": "/orders/{id}", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when the idempotency key named an existing order: the body "
        "is that order, as it is now",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    summary="Place an order",
    description="Answers 201 only once the order and its saga are durable; the saga then "
    "runs in the background. With `X-Idempotency-Key` (or `Idempotency-Key`), the same key "
    "and body always answer the same order (marked `Idempotent-Replayed: true`); the same "
    "key with another body is 422.",
    responses={201: {"headers": _CREATED_HEADERS}, **errors(400, 415, 422, 503)},
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "idempotency key, 1 to 255 printable ASCII characters",
            }
            for name in ("X-Idempotency-Key", "Idempotency-Key")
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrderIn"}}},
        },
    },
)
async def create_order(request: Request, response: Response, gw: GW) -> OrderOut:
    if not is_json_media_type(request.headers.get("content-type")):
        raise ApiError(
            415, "unsupported_media_type", "send the order as Content-Type: application/json"
        )
    new = _new_saga(idempotency_key(request.headers), parse_order(await request.body()))
    return await _start(response, gw, new)


def _new_saga(key: str | None, order: OrderRequest) -> NewSaga:
    return NewSaga(
        id=str(uuid.uuid4()),
        definition=ORDER_SAGA,
        payload=order.to_payload(),
        idempotency_key=key,
        # The request's trace (its server span continues the caller's `traceparent`): the
        # saga and every step, in any process that ever drives it, stay in this trace.
        trace_id=current_trace_id(),
    )


async def _start(response: Response, gw: Gateway, new: NewSaga) -> OrderOut:
    # A client that hangs up cannot strand the saga: Runner.start_saga shields the durable
    # write and the start of its drive together.
    try:
        outcome = await start_once(gw.runner, gw.cache, new)
    except Overloaded as exc:
        # Busy, and the queue in the log is long: refused before anything was written.
        refusal = ApiError(
            503,
            "overloaded",
            f"{exc.waiting} orders are waiting to be processed; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )
        return await _replay_or_refuse(response, gw, new, refusal)
    except StorageError as exc:
        return await _replay_or_refuse(response, gw, new, exc)
    except CommitOutcomeUnknown:
        raise  # not a refusal: the order may exist (see gateway/errors.py)
    except EngineError as exc:
        gw.metrics.order_refused(public_code(exc))
        raise
    return _answer(response, gw, outcome)


async def _replay_or_refuse(
    response: Response, gw: Gateway, new: NewSaga, refusal: ApiError | EngineError
) -> OrderOut:
    """No saga can be started now (the queue is full, the log cannot be written). A
    client retrying an order it already placed still gets that order, found by a read;
    any other request gets the refusal."""
    try:
        outcome = await recognise(gw.log, new)
    except StorageError:
        outcome = None  # the log cannot be read either: the refusal stands
    except EngineError as exc:  # the key named another request
        gw.metrics.order_refused(public_code(exc))
        raise
    if outcome is None:
        code = refusal.code if isinstance(refusal, ApiError) else public_code(refusal)
        gw.metrics.order_refused(code)
        raise refusal
    return _answer(response, gw, outcome)


def _answer(response: Response, gw: Gateway, outcome: StartOutcome) -> OrderOut:
    record = outcome.record
    response.headers["Location"] = f"/orders/{record.id}"
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
        gw.metrics.idempotency_hit(outcome.layer or "log")
    else:
        gw.metrics.order_created()
    return order_out(Order.from_saga(record))


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    summary="Get an order",
    responses=errors(404, 503),
)
async def get_order(order_id: str, gw: GW) -> OrderOut:
    record = await gw.log.get(order_id)
    if record is None or record.definition != ORDER_SAGA:
        raise ApiError(404, "order_not_found", f"no order {order_id!r}")
    return order_out(Order.from_saga(record))


@router.get(
    "/orders",
    response_model=OrderPage,
    summary="List orders, newest first",
    responses=errors(400, 503),
)
async def list_orders(
    gw: GW,
    status: Annotated[OrderStatus | None, Query(description="only orders in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="the next_cursor of the previous page"),
    ] = None,
) -> OrderPage:
    flt = SagaFilter(
        definition=ORDER_SAGA, statuses=statuses_for(status) if status is not None else ()
    )
    page = await gw.log.list_sagas(flt, limit=limit, cursor=cursor)
    return OrderPage(
        orders=[order_out(Order.from_saga(r)) for r in page.items], next_cursor=page.next_cursor
    )
