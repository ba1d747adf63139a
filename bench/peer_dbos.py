"""The order saga on DBOS Transact, for `bench peers`: one process, as a user of DBOS
would write it (`python -m bench.peer_dbos`, settings from the environment).

- `POST /orders` (FastAPI on uvicorn, as the gateway) parses the body with the gateway's
  own parser, takes the idempotency key as the workflow's ID (DBOS's own idempotency:
  the same ID names the same workflow), starts the workflow with `start_workflow_async`
  and answers 201 once DBOS has recorded it (its status row is written before the
  workflow runs): the same promise as the gateway's durable 201.
- The workflow makes the order saga's own calls: each step of orders/saga.py's
  definition is one DBOS step that runs that step's action (or compensation) through
  the gateway's gRPC client (orders.participants) to the same three services. A refusal
  before the pivot compensates what was done, in reverse (the order is always
  cancelled), as the engine does; transient errors are retried by DBOS's step retries
  (6 attempts, 50 ms doubling), like the engine's default budget.
- DBOS's system database is SQLite (`DBOS_SQLITE`), put in WAL mode before DBOS opens it,
  with SQLite's default synchronous=FULL: the engine's durability.

Environment: HTTP_ADDR, ORDER/PAYMENT/INVENTORY_SERVICE_ADDR, DBOS_SQLITE (the file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.config import env_addr
from engine.definition import Done, StepContext, StepKind
from gateway.errors import ApiError, envelope
from gateway.order_input import idempotency_key, parse_order
from orders.participants import Participants, ServiceAddresses
from orders.saga import order_saga

__all__ = ["build_app", "main"]

WORKFLOW: Final = "order_saga"
DONE: Final = "done"

Step = Callable[[str, str, str], Awaitable[str]]
Workflow = Callable[[str, str], Coroutine[Any, Any, str]]


def _register(participants: Participants) -> Workflow:
    """The order workflow and its steps, registered with DBOS (before launch)."""
    from dbos import DBOS

    steps = order_saga(participants).steps

    def as_step(index: int, compensation: bool) -> Step:
        step = steps[index]
        fn = step.compensation if compensation else step.action
        assert fn is not None

        async def run(order_id: str, payload: str, reason: str) -> str:
            ctx = StepContext(
                order_id, payload.encode(), epoch=1, attempt=1, step=step.name, reason=reason
            )
            result = await fn(ctx)
            return DONE if isinstance(result, Done) else getattr(result, "reason", "refused")

        name = f"{'undo_' if compensation else ''}{step.name}"
        decorate = DBOS.step(name=name, retries_allowed=True, interval_seconds=0.05, max_attempts=6)
        wrapped: Step = decorate(run)
        return wrapped

    actions = [as_step(i, False) for i in range(len(steps))]
    undo = {i: as_step(i, True) for i, s in enumerate(steps) if s.compensation is not None}
    pivot = next(i for i, s in enumerate(steps) if s.kind is StepKind.PIVOT)

    async def order_workflow(order_id: str, payload: str) -> str:
        for i, action in enumerate(actions):
            outcome = await action(order_id, payload, "")
            if outcome == DONE:
                continue
            if i > pivot:  # after the pivot a saga only goes forward
                raise RuntimeError(f"{order_id}: {steps[i].name} refused: {outcome}")
            for j in reversed(range(i + 1 if i == 0 else i)):  # the order is always undone
                if j in undo:
                    await undo[j](order_id, payload, outcome)
            return "CANCELLED"
        return "CONFIRMED"

    workflow: Workflow = DBOS.workflow(name=WORKFLOW)(order_workflow)
    return workflow


def build_app(env: Mapping[str, str], db: Path) -> FastAPI:
    from dbos import DBOS, SetWorkflowID

    with sqlite3.connect(db) as conn:  # persistent in the file: DBOS's connections keep it
        conn.execute("PRAGMA journal_mode=WAL")
    workflows: dict[str, Workflow] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # On uvicorn's loop: gRPC's aio channels need it, and DBOS runs async workflows
        # as tasks of the loop that starts them.
        participants = Participants(ServiceAddresses.from_env(env))
        workflows[WORKFLOW] = _register(participants)
        DBOS(
            config={
                "name": "saga-peer",
                "system_database_url": f"sqlite:///{db}",
                "log_level": "WARNING",
            }
        )
        DBOS.launch()
        try:
            yield
        finally:
            DBOS.destroy()
            await participants.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders", status_code=201)
    async def create_order(request: Request) -> JSONResponse:
        try:
            order = parse_order(await request.body())
            key = idempotency_key(request.headers)
        except ApiError as exc:
            return JSONResponse(envelope(exc.code, str(exc)), status_code=exc.status)
        workflow_id = key or str(uuid.uuid4())
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(
                workflows[WORKFLOW], workflow_id, order.to_payload().decode()
            )
        return JSONResponse({"id": workflow_id, "status": "PENDING"}, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> int:
    env = dict(os.environ)
    host, port = env_addr(env, "HTTP_ADDR", "127.0.0.1:8080")
    db = Path(env.get("DBOS_SQLITE", "dbos.sqlite"))
    app = build_app(env, db)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
