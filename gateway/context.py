"""What the routes use: one `Gateway` per app, built by the app's lifespan and kept on
`app.state` (never in a module global), and the FastAPI dependency that hands it out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request
from starlette.types import ASGIApp

from engine.clock import Clock
from engine.definition import SagaDefinition
from engine.errors import StorageError, StorageFault
from engine.idempotency import IdempotencyCache
from engine.runner import Runner
from engine.saga_log import SagaLog
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from orders.participants import Participants

__all__ = ["Gateway", "gateway", "running", "starting"]


@dataclass(frozen=True, slots=True)
class Gateway:
    """The running gateway: its settings and the resources the lifespan opened."""

    settings: GatewaySettings
    log: SagaLog
    runner: Runner
    cache: IdempotencyCache
    participants: Participants
    metrics: GatewayMetrics
    definitions: Mapping[str, SagaDefinition]
    clock: Clock


async def gateway(request: Request) -> Gateway:
    """FastAPI dependency: the running app's Gateway. A coroutine on purpose: FastAPI runs
    a plain `def` dependency in its thread pool, a thread hand-off and two loop wake-ups
    for every request just to read an attribute."""
    return running(request.app)


def running(app: ASGIApp) -> Gateway:
    """The Gateway that `app`'s lifespan set up."""
    gw: Gateway | None = getattr(getattr(app, "state", None), "gateway", None)
    if gw is None:
        waiting = _waiting(app)
        if waiting is not None:  # the log's database cannot be reached yet: 503
            raise StorageError(StorageFault.UNAVAILABLE, waiting)
        raise RuntimeError("the gateway is not started: run the app's lifespan first")
    return gw


def starting(request: Request) -> str | None:
    """Why the gateway cannot serve yet (its saga log's database cannot be reached, the
    redacted reason), or None once it is serving."""
    return _waiting(request.app)


def _waiting(app: ASGIApp) -> str | None:
    reason: str | None = getattr(getattr(app, "state", None), "starting", None)
    return reason
