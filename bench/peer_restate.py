"""The order saga on Restate, for `bench peers`: the service endpoint, one process
(`python -m bench.peer_restate`, settings from the environment), which a Restate server
(`restate-server`, from the npm package `@restatedev/restate-server`) invokes.

- The service `OrderSaga` has one handler, `order`, invoked through Restate's ingress
  with a one-way send (`POST /OrderSaga/order/send` with an `idempotency-key`), which the
  server answers 202 once the invocation is durable in its log.
- The handler validates the body with the gateway's parser and makes the order saga's
  own calls: each step of orders/saga.py's definition is one `ctx.run_typed` (a durable
  side effect, journaled by the server) that runs that step's action (or compensation)
  through the gateway's gRPC client to the same three services; a refusal before the
  pivot compensates in reverse, as the engine does; retries: 6 attempts from 50 ms.
- The endpoint speaks Restate's request/response protocol over HTTP/1.1 on uvicorn (the
  SDK's bidirectional protocol needs HTTP/2, which uvicorn does not serve); it is
  registered with `use_http_11`.

Environment: HTTP_ADDR (where this endpoint listens), ORDER/PAYMENT/INVENTORY_SERVICE_ADDR.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, Final

import restate
import uvicorn
from restate import Context, RunOptions, Service, TerminalError

from engine.config import env_addr
from engine.definition import Done, StepContext, StepKind
from gateway.errors import ApiError
from gateway.order_input import parse_order
from orders.participants import Participants, ServiceAddresses
from orders.saga import order_saga

__all__ = ["SERVICE", "build_app", "main"]

SERVICE: Final = "OrderSaga"
DONE: Final = "done"
_RETRY: Final = RunOptions[str](
    max_attempts=6, initial_retry_interval=timedelta(milliseconds=50), retry_interval_factor=2.0
)


def build_app(env: Mapping[str, str]) -> Any:
    service = Service(SERVICE)
    clients: dict[str, Participants] = {}  # made on the serving loop, at the first call

    def steps() -> Any:
        if "p" not in clients:
            clients["p"] = Participants(ServiceAddresses.from_env(env))
        return order_saga(clients["p"]).steps

    def runner(
        index: int, compensation: bool
    ) -> Callable[[str, str, str], Coroutine[Any, Any, str]]:
        async def run(order_id: str, payload: str, reason: str) -> str:
            step = steps()[index]
            fn = step.compensation if compensation else step.action
            ctx = StepContext(
                order_id, payload.encode(), epoch=1, attempt=1, step=step.name, reason=reason
            )
            result = await fn(ctx)
            return DONE if isinstance(result, Done) else str(getattr(result, "reason", "no"))

        return run

    @service.handler()  # type: ignore[untyped-decorator, unused-ignore]  # restate-sdk is optional
    async def order(ctx: Context, body: dict[str, Any]) -> str:
        try:
            payload = parse_order(json.dumps(body).encode()).to_payload().decode()
        except ApiError as exc:
            raise TerminalError(str(exc)) from exc
        order_id = ctx.request().id
        defined = steps()
        pivot = next(i for i, s in enumerate(defined) if s.kind is StepKind.PIVOT)
        for i, step in enumerate(defined):
            outcome = await ctx.run_typed(
                step.name, runner(i, False), _RETRY, order_id, payload, ""
            )
            if outcome == DONE:
                continue
            if i > pivot:  # after the pivot a saga only goes forward
                raise TerminalError(f"{step.name} refused after the pivot: {outcome}")
            for j in reversed(range(i + 1 if i == 0 else i)):  # the order is always undone
                if defined[j].compensation is not None:
                    name = f"undo_{defined[j].name}"
                    await ctx.run_typed(name, runner(j, True), _RETRY, order_id, payload, outcome)
            return "CANCELLED"
        return "CONFIRMED"

    return restate.app(services=[service], protocol="request_response")


def main() -> int:
    env = dict(os.environ)
    host, port = env_addr(env, "HTTP_ADDR", "127.0.0.1:9080")
    uvicorn.run(build_app(env), host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
