"""One order, one trace: the request's server span, the saga's step attempts under it,
each participant call a client span under its attempt, and each service's server span
under that call. In process: the gateway app and the three real gRPC services, each with
its own tracer provider (as separate processes have), all exporting to one in-memory
exporter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

from engine.telemetry import service_name
from orders.participants import Participants, ServiceAddresses
from services.common.server import start
from services.main import spec_for
from tests.gateway.conftest import FAST, ORDER_50, ORDER_600, Api, gateway_settings, running
from tests.services.helpers import settings_for
from tests.support.spans import STEP_RPCS, Span, Spans, from_sdk

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Tracing:
    """One in-memory exporter; a tracer provider per (pretend) process."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.providers: list[TracerProvider] = []

    def provider(self, role: str, sampler: Sampler | None = None) -> TracerProvider:
        resource = Resource.create({"service.name": service_name(role)})
        provider = TracerProvider(resource=resource, sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.providers.append(provider)
        return provider

    def spans(self) -> Spans:
        return Spans(from_sdk(self.exporter.get_finished_spans()))

    async def wait_for(self, trace_id: str, server_spans: int) -> Spans:
        """Spans end a hair after the answers they wrap: wait (bounded) for them."""
        async with asyncio.timeout(10):
            while True:
                spans = self.spans().of_trace(trace_id)
                if len([s for s in spans.all if s.kind == "SERVER"]) >= server_spans:
                    return spans
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def traced_stack(
    tmp_path: Path,
    tracing: Tracing,
    *,
    gateway_sampler: Sampler | None = None,
    service_sampler: Sampler | None = None,
) -> AsyncIterator[Api]:
    async with contextlib.AsyncExitStack() as stack:
        ports = {}
        for name in ("order", "payment", "inventory"):
            running_service = await start(
                spec_for(settings_for(name, tmp_path)), settings_for(name, tmp_path),
                tracer_provider=tracing.provider(name, service_sampler),
            )  # fmt: skip
            stack.push_async_callback(running_service.stop, 0)
            ports[name] = running_service.port
        addresses = ServiceAddresses(
            order=("127.0.0.1", ports["order"]),
            payment=("127.0.0.1", ports["payment"]),
            inventory=("127.0.0.1", ports["inventory"]),
        )
        gateway = tracing.provider("gateway", gateway_sampler)
        api = await stack.enter_async_context(
            running(
                gateway_settings(tmp_path, addresses),
                policy=FAST,
                participants=Participants(addresses, tracer_provider=gateway),
                tracer_provider=gateway,
            )
        )
        yield api


@pytest.fixture
async def tracing() -> AsyncIterator[Tracing]:
    t = Tracing()
    yield t
    for provider in t.providers:
        provider.shutdown()


def assert_step_chain(spans: Spans, attempt: Span, order_id: str) -> None:
    """attempt -> client call -> the participant's server span, all with the saga's id."""
    step = str(attempt.attributes["saga.step"])
    service, rpc = STEP_RPCS[step]
    clients = [s for s in spans.all if s.kind == "CLIENT" and s.parent_id == attempt.span_id]
    assert [c.name for c in clients] == [rpc], spans.describe()
    servers = [s for s in spans.all if s.kind == "SERVER" and s.parent_id == clients[0].span_id]
    assert len(servers) == 1, spans.describe()
    server = servers[0]
    assert (server.service, server.name) == (service, rpc)
    assert server.attributes["saga.id"] == order_id


def assert_only_polls_outside(spans: Spans, trace_id: str) -> None:
    """Outside the order's trace there are only the test's GETs, each a trace of its own."""
    others = [s for s in spans.all if s.trace_id != trace_id]
    assert {(s.service, s.kind, s.name.split()[0]) for s in others} <= {
        ("saga-gateway", "SERVER", "GET")
    }, spans.describe()


async def test_one_order_is_one_trace_across_the_gateway_and_every_service(
    tmp_path: Path, tracing: Tracing
) -> None:
    async with traced_stack(tmp_path, tracing) as api:
        resp = await api.post_order(traceparent=f"00-{TRACE}-{CALLER_SPAN}-01")
        assert resp.status_code == 201, resp.text
        order_id = resp.json()["id"]
        assert (await api.wait_terminal(order_id))["status"] == "CONFIRMED"
        saga = (await api.client.get(f"/sagas/{order_id}")).json()
        spans = await tracing.wait_for(TRACE, server_spans=4)

    # The saga is filed under the caller's trace, and so is every transition of its log.
    assert saga["trace_id"] == TRACE
    assert {s["trace_id"] for s in saga["steps"]} == {TRACE}

    # The request's server span continues the caller's span.
    request = spans.one("POST /orders", "saga-gateway")
    assert (request.kind, request.parent_id) == ("SERVER", CALLER_SPAN)

    # A span per step attempt, children of the request, each with its saga, step and outcome.
    attempts = [s for s in spans.all if s.name.startswith("saga.step ")]
    assert [a.attributes["saga.step"] for a in attempts] == list(STEP_RPCS)
    for attempt in attempts:
        assert attempt.service == "saga-gateway"
        assert attempt.parent_id == request.span_id
        assert attempt.attributes["saga.id"] == order_id
        assert attempt.attributes["saga.attempt"] == 1
        assert attempt.attributes["saga.outcome"] == "done"
        assert_step_chain(spans, attempt, order_id)

    # Every span of every process is in the order's trace, but the test's own polls.
    assert_only_polls_outside(tracing.spans(), TRACE)
    assert {s.service for s in spans.all} == {
        "saga-gateway", "saga-order", "saga-payment", "saga-inventory",
    }  # fmt: skip


async def test_without_a_traceparent_the_request_starts_the_saga_s_trace(
    tmp_path: Path, tracing: Tracing
) -> None:
    async with traced_stack(tmp_path, tracing) as api:
        resp = await api.post_order(ORDER_600)  # declined: compensations are traced too
        order_id = resp.json()["id"]
        assert (await api.wait_terminal(order_id))["status"] == "CANCELLED"
        saga = (await api.client.get(f"/sagas/{order_id}")).json()
        trace_id = saga["trace_id"]
        spans = await tracing.wait_for(trace_id, server_spans=5)

    request = spans.one("POST /orders", "saga-gateway")
    assert request.parent_id is None  # a root: the gateway began this trace
    assert {s["trace_id"] for s in saga["steps"]} == {trace_id}
    compensations = [s for s in spans.all if s.name.startswith("saga.compensate ")]
    assert [c.attributes["saga.step"] for c in compensations] == ["reserve_stock", "create_order"]
    refused = spans.one("saga.step charge_payment")
    assert refused.attributes["saga.outcome"] == "refused"
    release = [s for s in spans.all if s.name == "/inventory.v1.Inventory/Release"]
    assert {s.kind for s in release} == {"CLIENT", "SERVER"}
    assert_only_polls_outside(tracing.spans(), trace_id)


async def test_a_gateway_that_exports_nothing_still_carries_the_caller_s_trace(
    tmp_path: Path, tracing: Tracing
) -> None:
    """Without an exporter the gateway makes its spans itself (engine.telemetry.exports):
    the caller's trace still reaches the saga log and, through `traceparent`, every
    service (which here records every span it is given, to show what it received)."""
    async with traced_stack(
        tmp_path, tracing, gateway_sampler=ALWAYS_OFF, service_sampler=ALWAYS_ON
    ) as api:
        resp = await api.post_order(traceparent=f"00-{TRACE}-{CALLER_SPAN}-01")
        assert resp.status_code == 201, resp.text
        order_id = resp.json()["id"]
        assert (await api.wait_terminal(order_id))["status"] == "CONFIRMED"
        saga = (await api.client.get(f"/sagas/{order_id}")).json()
        spans = await tracing.wait_for(TRACE, server_spans=4)

    assert saga["trace_id"] == TRACE
    assert {s["trace_id"] for s in saga["steps"]} == {TRACE}
    servers = [s for s in spans.all if s.kind == "SERVER"]
    assert sorted(s.name for s in servers) == sorted(rpc for _, rpc in STEP_RPCS.values())
    assert all(s.attributes["saga.id"] == order_id for s in servers)
    # Each call's parent is its step attempt's span, not the caller's: one per attempt.
    parents = {s.parent_id for s in servers}
    assert len(parents) == len(servers) and CALLER_SPAN not in parents
    assert not [s for s in tracing.spans().all if s.service == "saga-gateway"]


async def test_probes_make_no_spans(tmp_path: Path, tracing: Tracing) -> None:
    async with traced_stack(tmp_path, tracing) as api:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await api.client.get(path)).status_code == 200
    # /readyz asked each service's gRPC health check: no client or server spans either.
    assert tracing.spans().all == []


async def test_the_order_body_is_unchanged_by_tracing(tmp_path: Path, tracing: Tracing) -> None:
    async with traced_stack(tmp_path, tracing) as api:
        resp = await api.post_order(ORDER_50, key="k-1")
        again = await api.post_order(ORDER_50, key="k-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == resp.json()["id"]
