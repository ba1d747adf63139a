"""The saga explorer's pages (`/ui`): server-rendered HTML over the same saga log, settings
and admin code as the JSON routes. The edge translates and renders; the log answers from
its indexes and kept counts, and the engine's pure core says what an action would do.

Every page answers with its own error page: a 400 that names the field for bad input, a
404 for an unknown saga or page, a 503 when the log cannot be read; never the JSON
envelope, never a stack trace. A request with `X-Fragment: live` gets only the part of the
page that refreshes itself (the list's rows, the overview's panels, the saga's state), so
polling re-reads the log through exactly the code that rendered the page.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from engine.core import ACTIVE_STATUSES, SagaStatus
from engine.errors import StorageError
from engine.saga_log import InvalidCursor, SagaFilter, SagaPage, SagaRecord, pruned_before
from gateway.context import Gateway, gateway
from gateway.routes_sagas import admin
from gateway.schemas import rfc3339
from gateway.settings import TRACE_ID_SLOT
from gateway.ui.overview import CHART_H, CHART_W, MINUTES, chart
from gateway.ui.query import ListQuery, UiInputError, check_saga_id, parse_list_query
from gateway.ui.timeline import (
    SCALE,
    action_preview,
    human_duration,
    next_text,
    step_views,
    timeline,
)
from orders.model import ORDER_SAGA, Order, OrderRequest

__all__ = ["router", "templates"]

router = APIRouter(prefix="/ui", include_in_schema=False)

GW = Annotated[Gateway, Depends(gateway)]
FRAGMENT_HEADER: Final = "x-fragment"
ATTENTION_ROWS: Final = 20
# Health checks of the overview: short, so a service that hangs cannot hold the page.
HEALTH_TIMEOUT_S: Final = 1.0
PAYLOAD_SHOWN: Final = 4096
NO_STORE: Final = {"Cache-Control": "no-store", "Vary": "X-Fragment"}


def templates() -> Environment:
    """The pages' templates. Autoescaping is on for everything: whatever a client typed
    (customer and product ids, keys, reasons) is rendered as text, never as markup."""
    env = Environment(
        loader=PackageLoader("gateway.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["rfc3339"] = rfc3339
    env.filters["duration"] = human_duration
    env.filters["money"] = lambda cents: f"{cents / 100:,.2f}"
    env.filters["pathquote"] = lambda text: quote(str(text), safe="")
    env.globals.update(SCALE=SCALE, CHART_W=CHART_W, CHART_H=CHART_H, MINUTES=MINUTES)
    return env


_ENV: Final = templates()


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    live = request.headers.get(FRAGMENT_HEADER) == "live"
    name = template.replace(".html", "_live.html") if live and "live" in context else template
    html = _ENV.get_template(name).render(request_path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _error(request: Request, status: int, title: str, message: str, **extra: Any) -> Response:
    return _page(
        request, "error.html", status, title=title, message=message, status_code=status, **extra
    )


async def _guarded(request: Request, build: Callable[[], Awaitable[Response]]) -> Response:
    """A page, or its own error page for what a person or the log can cause."""
    try:
        return await build()
    except (UiInputError, InvalidCursor) as exc:
        return _error(request, 400, "That request cannot be shown", exc.message)
    except StorageError:
        return _error(
            request,
            503,
            "The saga log cannot be read right now",
            "The gateway could not read its saga log (locked, full or gone). Try again in "
            "a moment; /readyz says what is wrong.",
        )


# ---- values the templates show ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """A saga in a list, with its order when it is one."""

    record: SagaRecord
    order: OrderRequest | None
    age_ms: int
    lease_live: bool
    match: str | None = None  # why a search found it

    @property
    def attention(self) -> bool:
        return self.record.status is SagaStatus.NEEDS_ATTENTION


def _order_of(record: SagaRecord) -> OrderRequest | None:
    if record.definition != ORDER_SAGA:
        return None
    try:
        return Order.from_saga(record).request
    except (ValueError, KeyError, TypeError):  # a payload this program cannot read
        return None


def _lease_live(record: SagaRecord, now_ms: int) -> bool:
    return (
        record.owner is not None
        and record.status in ACTIVE_STATUSES
        and record.lease_expires_ms >= now_ms
    )


def _row(record: SagaRecord, now_ms: int, match: str | None = None) -> Row:
    return Row(
        record, _order_of(record), max(0, now_ms - record.created_ms),
        _lease_live(record, now_ms), match,
    )  # fmt: skip


def _lease_text(record: SagaRecord, now_ms: int) -> str:
    if record.status not in ACTIVE_STATUSES:
        return "none: only a running or compensating saga is held"
    if _lease_live(record, now_ms):
        left = human_duration(record.lease_expires_ms - now_ms)
        return f"held by {record.owner} for {left} more (until {rfc3339(record.lease_expires_ms)})"
    if record.owner is None:
        return "unowned: the next gateway or recovery daemon with room claims it"
    ago = human_duration(now_ms - record.lease_expires_ms)
    return f"{record.owner}'s lease expired {ago} ago: the next runner to look claims it"


def _trace_url(template: str | None, trace_id: str | None) -> str | None:
    if template is None or not trace_id:
        return None
    return template.replace(TRACE_ID_SLOT, quote(trace_id, safe=""))


def _now(gw: Gateway) -> int:
    return gw.clock.now_ms()


# ---- pages --------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, gw: GW) -> Response:
    async def build() -> Response:
        now = _now(gw)
        counts = await gw.log.count_by_status()
        attention = await gw.log.list_sagas(
            SagaFilter(statuses=(SagaStatus.NEEDS_ATTENTION,)), limit=ATTENTION_ROWS
        )
        started = time.perf_counter()
        health = await gw.participants.health(min(gw.settings.ready_timeout_s, HEALTH_TIMEOUT_S))
        health_ms = round((time.perf_counter() - started) * 1000)
        oldest = await gw.log.oldest_unfinished_ms()
        return _page(
            request,
            "overview.html",
            live=True,
            now_ms=now,
            counts=[(s, counts.get(s, 0)) for s in SagaStatus],
            total=sum(counts.values()),
            chart=chart(await gw.log.count_per_minute(since_ms=now - MINUTES * 60_000), now),
            attention=[_row(r, now) for r in attention.items],
            attention_total=counts.get(SagaStatus.NEEDS_ATTENTION, 0),
            queue=await gw.log.count_claimable(now_ms=now),
            oldest_ms=None if oldest is None else max(0, now - oldest),
            health=[("saga_log", "ok"), *health.items()],
            health_ms=health_ms,
            runner=gw.runner,
        )

    return await _guarded(request, build)


async def _search(gw: Gateway, query: ListQuery, now: int) -> tuple[list[Row], str | None]:
    """Sagas a person may mean by the text: its id (an order's id is its saga's), the
    idempotency key it was created with, or its customer. Each read is an index's."""
    assert query.q is not None
    text = query.q.strip()
    found: dict[str, Row] = {}
    if query.cursor is None:
        by_id = await gw.log.get(text)
        if by_id is not None:
            found[by_id.id] = _row(by_id, now, "saga id")
        by_key = await gw.log.get_by_key(text)
        if by_key is not None and by_key.id not in found:
            found[by_key.id] = _row(by_key, now, "idempotency key")
    customers: SagaPage = await gw.log.list_by_payload_field(
        "customer_id", text, limit=query.limit, cursor=query.cursor
    )
    for record in customers.items:
        found.setdefault(record.id, _row(record, now, "customer id"))
    return list(found.values()), customers.next_cursor


@router.get("/sagas", response_class=HTMLResponse)
async def saga_list(request: Request, gw: GW) -> Response:
    async def build() -> Response:
        now = _now(gw)
        params = {k: request.query_params.getlist(k) for k in request.query_params}
        query = parse_list_query(params, gw.definitions.keys(), now)
        if query.searching:
            rows, next_cursor = await _search(gw, query, now)
        else:
            page = await gw.log.list_sagas(
                query.to_filter(now), limit=query.limit, cursor=query.cursor
            )
            rows, next_cursor = [_row(r, now) for r in page.items], page.next_cursor
        counts = await gw.log.count_by_status()
        return _page(
            request,
            "list.html",
            live=True,
            now_ms=now,
            query=query,
            rows=rows,
            next_cursor=next_cursor,
            counts=[(s, counts.get(s, 0)) for s in SagaStatus],
            statuses=list(SagaStatus),
            definitions=sorted(gw.definitions),
        )

    return await _guarded(request, build)


@router.get("/sagas/{saga_id:path}", response_class=HTMLResponse)
async def saga_page(request: Request, saga_id: str, gw: GW) -> Response:
    if saga_id == "":
        return RedirectResponse("/ui/sagas", status_code=307)

    async def build() -> Response:
        sid = check_saga_id(saga_id)
        record = await gw.log.get(sid)
        if record is None:
            return _error(
                request,
                404,
                "No such saga",
                f"There is no saga {sid!r} in this gateway's log. An order's id is its "
                "saga's id; search by idempotency key or customer id on the list.",
                search=sid,
            )
        now = _now(gw)
        transitions = await gw.log.transitions(sid)
        definition = gw.definitions.get(record.definition)
        payload_text = None
        order = _order_of(record)
        if order is None:
            payload_text = record.payload[:PAYLOAD_SHOWN].decode("utf-8", "replace")
        return _page(
            request,
            "saga.html",
            live=True,
            now_ms=now,
            record=record,
            order=order,
            payload_text=payload_text,
            payload_truncated=len(record.payload) > PAYLOAD_SHOWN,
            timeline=timeline(record, transitions, definition, now),
            steps=step_views(definition, transitions),
            next=next_text(definition, transitions),
            lease=_lease_text(record, now),
            lease_live=_lease_live(record, now),
            actions=[action_preview(v, definition, transitions) for v in ("retry", "cancel")],
            admin_open=gw.settings.admin_token is not None,
            trace_url=_trace_url(gw.settings.ui_trace_url, record.trace_id),
            show_command=f"saga show {shlex.quote(record.id)}",
            history_pruned=pruned_before(transitions) is not None,
        )

    return await _guarded(request, build)


@router.get("/session", status_code=204, dependencies=[Depends(admin)])
async def session() -> Response:
    """The admin token check behind the page's unlock: the admin routes' own dependency,
    so a token the page accepts is exactly one the admin routes accept."""
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@router.get("/{rest:path}", response_class=HTMLResponse)
async def not_found(request: Request, rest: str) -> Response:
    if rest == "":
        return RedirectResponse("/ui", status_code=307)
    return _error(request, 404, "No such page", f"The explorer has no page {request.url.path!r}.")
