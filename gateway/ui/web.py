"""What the gateway serves besides its API: the saga explorer's router and static files,
/docs with Swagger UI's assets from the gateway itself (FastAPI's own page loads them from
a CDN, so offline it is blank), and the security headers of every such page.

The pages' Content-Security-Policy allows scripts, styles, images and requests from the
gateway's own origin only, and no inline script: a customer id that is markup could not
run even if it ever escaped the templates' escaping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ui.routes import router, templates

__all__ = ["CSP", "SecurityHeaders", "install_ui"]

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# Paths whose answers are pages (or their assets) rather than the JSON API.
_PAGES: Final = ("/ui", "/docs")

STATIC_DIR: Final = Path(__file__).parent / "static"
SWAGGER_DIR: Final = Path(fastapi_offline.__file__).parent / "static"


def _is_page(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _PAGES)


class SecurityHeaders:
    """Pure ASGI: the CSP and its companions on every answer under /ui and /docs (error
    pages included), whatever produced it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_page(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in _HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _docs_page(env: Environment, app: FastAPI) -> HTMLResponse:
    html = env.get_template("docs.html").render(
        title=f"{app.title} - Swagger UI", openapi_url=app.openapi_url or "/openapi.json"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def install_ui(app: FastAPI) -> None:
    """Mount the explorer and the offline /docs on `app` (created with docs_url=None)."""
    env = templates()
    # Static files first: the explorer's router ends with a catch-all /ui/… not-found page.
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return _docs_page(env, app)

    app.include_router(router)
