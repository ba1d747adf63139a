"""Operational routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from engine.errors import EngineError
from gateway.context import Gateway, gateway, starting
from gateway.errors import envelope
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.schemas import HealthOut, ReadyOut, ReadyProblem

__all__ = ["router"]

router = APIRouter(tags=["operations"])

GW = Annotated[Gateway, Depends(gateway)]


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Ready to take orders: the saga log is writable and the services answer",
    responses={503: {"model": ReadyProblem, "description": "not_ready: what failed"}},
)
async def readyz(request: Request) -> ReadyOut | JSONResponse:
    waiting = starting(request)
    if waiting is not None:  # not a dependency's 503: a probe names what it waits for
        body = envelope("not_ready", f"not ready: saga_log: {waiting}")
        return JSONResponse({**body, "checks": {"saga_log": waiting}}, status_code=503)
    gw = await gateway(request)
    checks: dict[str, str] = {}
    try:
        # A real write transaction on the log (the runner's own heartbeat): it fails
        # when the file is locked past the busy timeout, read-only or gone.
        now = gw.clock.now_ms()
        await gw.log.renew(
            gw.runner.settings.owner, lease_expires_ms=now + int(gw.settings.drive.lease_s * 1000)
        )
        checks["saga_log"] = "ok"
    except EngineError as exc:
        checks["saga_log"] = exc.message
    checks.update(await gw.participants.health(gw.settings.ready_timeout_s))
    failed = {name: why for name, why in checks.items() if why != "ok"}
    if failed:
        body = envelope(
            "not_ready", "not ready: " + "; ".join(f"{n}: {w}" for n, w in failed.items())
        )
        return JSONResponse({**body, "checks": checks}, status_code=503)
    return ReadyOut(status="ready", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    if gw is None:  # waiting for the saga log's database: what is known so far
        waiting: GatewayMetrics = await metrics_only(request)
        return Response(waiting.render(), media_type=CONTENT_TYPE)
    with contextlib.suppress(EngineError):  # an unreadable log must not hide the rest
        await gw.metrics.sample(gw.log, gw.clock.now_ms())
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE)


async def metrics_only(request: Request) -> GatewayMetrics:
    """The app's metrics while it is not serving yet (gateway/app.py keeps them on the
    app's state); the gateway dependency's error when there are none."""
    found: GatewayMetrics | None = getattr(request.app.state, "metrics", None)
    if found is None:
        return (await gateway(request)).metrics
    return found
