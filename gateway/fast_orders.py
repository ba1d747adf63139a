"""`POST /orders` served in front of FastAPI's routing: the route every order takes.

FastAPI's path to a route (its router's match over every route, the exception
middleware, dependency solving, the response model's validation of a value the route
built itself) was about half of the gateway's CPU per order, for a route that needs none
of it: the body is read by hand (gateway/order_input.py), the Gateway is one attribute.
So this pure ASGI middleware, the innermost of the gateway's own, answers exactly that
method and path itself through the route's own function (`place_order`), and renders
errors through the error handlers' own table (`answer_error`). Everything around it is
unchanged: the request's span, the body limit, the request metrics (it sets the scope's
`route` as the router would), and the framework's last-resort 500 for a bug. The FastAPI
route stays: it is the operation in the OpenAPI document, and it answers where this path
steps aside (an app served under a root path).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.errors import EngineError
from gateway.context import running
from gateway.errors import answer_error
from gateway.routes_orders import place_order

__all__ = ["OrdersFastPath"]


class OrdersFastPath:
    """`route`: the app's `POST /orders` route (its template labels the metrics)."""

    def __init__(self, app: ASGIApp, *, route: BaseRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/orders"
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            placed = await place_order(running(scope["app"]), request.headers, request.body)
        except EngineError as exc:  # ApiError included: the handlers' answer, as the route's
            response = await answer_error(request, exc)
        else:
            response = JSONResponse(
                placed.order.model_dump(mode="json"), status_code=201, headers=placed.headers
            )
        await response(scope, receive, send)
