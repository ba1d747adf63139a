"""Saga routes: read a saga's log, and the operators' two changes (engine/operations.py).

The changes are closed unless SAGA_ADMIN_TOKEN is set (403), and then need
`Authorization: Bearer <token>` (401 without, 403 when wrong; compared in constant time).
A change is durable when it answers 202; the runner then claims the saga and drives it.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request

from engine.operations import cancel_saga, retry_saga
from engine.saga_log import SagaNotFound
from gateway.context import Gateway, gateway
from gateway.errors import ApiError
from gateway.schemas import SagaOut, errors, saga_out

__all__ = ["router"]

router = APIRouter(tags=["sagas"])

GW = Annotated[Gateway, Depends(gateway)]
ACTOR: Final = "http-admin"


async def _saga(gw: Gateway, saga_id: str) -> SagaOut:
    record = await gw.log.get(saga_id)
    if record is None:
        raise SagaNotFound(f"no saga {saga_id!r}", saga_id=saga_id)
    return saga_out(record, await gw.log.transitions(saga_id))


def admin(request: Request, gw: GW) -> None:
    """FastAPI dependency: the admin token check."""
    token = gw.settings.admin_token
    if token is None:
        raise ApiError(
            403, "forbidden", "the admin routes are closed: set SAGA_ADMIN_TOKEN to open them"
        )
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "unauthorized",
            "send the admin token as Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "the admin token is wrong")


@router.get(
    "/sagas/{saga_id}",
    response_model=SagaOut,
    summary="A saga and its log",
    responses=errors(404, 503),
)
async def get_saga(saga_id: str, gw: GW) -> SagaOut:
    return await _saga(gw, saga_id)


_ADMIN_ERRORS: Final = errors(401, 403, 404, 409, 503)


@router.post(
    "/sagas/{saga_id}/retry",
    status_code=202,
    response_model=SagaOut,
    summary="Resume a NEEDS_ATTENTION saga (admin)",
    description="Fresh attempt budgets for a parked saga; 409 `conflict` (not_parked) "
    "otherwise. Needs `Authorization: Bearer <SAGA_ADMIN_TOKEN>`.",
    responses=_ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
async def retry(saga_id: str, gw: GW) -> SagaOut:
    await retry_saga(gw.log, gw.definitions, saga_id, actor=ACTOR, now_ms=gw.clock.now_ms())
    await gw.runner.claim_now()  # take it back now rather than at the pump's next poll
    return await _saga(gw, saga_id)


@router.post(
    "/sagas/{saga_id}/cancel",
    status_code=202,
    response_model=SagaOut,
    summary="Compensate a saga before its pivot (admin)",
    description="The order ends CANCELLED with reason `cancelled_by_operator`; 409 "
    "`conflict` past the pivot (payment) or when it already ended or compensates. Needs "
    "`Authorization: Bearer <SAGA_ADMIN_TOKEN>`.",
    responses=_ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
async def cancel(saga_id: str, gw: GW) -> SagaOut:
    await cancel_saga(gw.log, gw.definitions, saga_id, actor=ACTOR, now_ms=gw.clock.now_ms())
    await gw.runner.claim_now()
    return await _saga(gw, saga_id)
