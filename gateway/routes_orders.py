"""Order routes: JSON <-> engine values, the engine's call, back again. Nothing decides here:
input rules are in gateway/order_input.py, errors in gateway/errors.py, idempotency in
engine/idempotency.py, and the saga in engine/runner.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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

__all__ = ["Placed", "place_order", "router"]

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
    # Served by gateway/fast_orders.py in front of FastAPI; this route documents the
    # operation and answers where that path steps aside (a root path). Both call this one.
    placed = await place_order(gw, request.headers, request.body)
    response.headers.update(placed.headers)
    return placed.order


@dataclass(frozen=True, slots=True)
class Placed:
    """A 201's body and its headers (Location, Idempotent-Replayed)."""

    order: OrderOut
    headers: dict[str, str]


async def place_order(
    gw: Gateway, headers: Mapping[str, str], body: Callable[[], Awaitable[bytes]]
) -> Placed:
    """POST /orders from its headers and a reader of its body (read only once the headers
    pass), or the ApiError / EngineError that the error table answers."""
    if not is_json_media_type(headers.get("content-type")):
        raise ApiError(
            415, "unsupported_media_type", "send the order as Content-Type: application/json"
        )
    key = idempotency_key(headers)
    return await _start(gw, _new_saga(key, parse_order(await body())))


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


async def _start(gw: Gateway, new: NewSaga) -> Placed:
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
        return await _replay_or_refuse(gw, new, refusal)
    except StorageError as exc:
        return await _replay_or_refuse(gw, new, exc)
    except CommitOutcomeUnknown:
        raise  # not a refusal: the order may exist (see gateway/errors.py)
    except EngineError as exc:
        gw.metrics.order_refused(public_code(exc))
        raise
    return _answer(gw, outcome)


async def _replay_or_refuse(gw: Gateway, new: NewSaga, refusal: ApiError | EngineError) -> Placed:
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
    return _answer(gw, outcome)


def _answer(gw: Gateway, outcome: StartOutcome) -> Placed:
    record = outcome.record
    headers = {"Location": f"/orders/{record.id}"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
        gw.metrics.idempotency_hit(outcome.layer or "log")
    else:
        gw.metrics.order_created()
    return Placed(order_out(Order.from_saga(record)), headers)


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
