"""Traces across real processes: the three `saga service`s, `saga gateway` and `saga recovery`,
each exporting over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT) to a receiver in this test, as
they would to the collector of the compose stack.

- One order is one trace spanning the gateway and every service.
- A saga whose gateway is SIGKILLed mid-flight (right after the pivot's intent) and
  finished by the recovery daemon keeps the request's trace id on every transition of its
  log, and the daemon's spans (and the services' spans under them) are in that trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from engine.core import Phase
from engine.saga_log import SagaFilter
from tests.gateway.procs import Stack, stack, wait_terminal
from tests.support.otlp import OtlpReceiver
from tests.support.spans import STEP_RPCS, Span, Spans

pytestmark = pytest.mark.slow

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER = "b7ad6b7169203331"
ORDER = {"customer_id": "cust_1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 5}]}


def exporting(otlp: OtlpReceiver) -> dict[str, str]:
    # Export within 50 ms of a span's end, not the SDK's default 5 s.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}


def server_span_under(spans: Spans, attempt: Span) -> Span:
    """attempt -> its client call -> the participant's server span (in another process)."""
    service, rpc = STEP_RPCS[str(attempt.attributes["saga.step"])]
    (client,) = [s for s in spans.all if s.kind == "CLIENT" and s.parent_id == attempt.span_id]
    (server,) = [s for s in spans.all if s.kind == "SERVER" and s.parent_id == client.span_id]
    assert (client.name, server.service, server.name) == (rpc, service, rpc)
    return server


def everything_of_one_order(spans: Spans) -> bool:
    """Each process exports in its own time: the request, 4 attempts, 4 calls, 4 answers."""
    kinds = [x.kind for x in spans.of_trace(TRACE).all]
    return (kinds.count("SERVER"), kinds.count("INTERNAL"), kinds.count("CLIENT")) == (5, 4, 4)


def test_one_order_is_one_trace_across_real_processes(tmp_path: Path) -> None:
    with OtlpReceiver() as otlp:
        env = exporting(otlp)
        with stack(tmp_path, gateway_env=env) as s, s.client() as client:
            resp = client.post("/orders", json=ORDER, headers={
                "traceparent": f"00-{TRACE}-{CALLER}-01"})  # fmt: skip
            assert resp.status_code == 201, resp.text
            order_id = resp.json()["id"]
            assert wait_terminal(client, order_id)["status"] == "CONFIRMED"
            saga = client.get(f"/sagas/{order_id}").json()
            spans = otlp.wait_for(everything_of_one_order).of_trace(TRACE)

    assert saga["trace_id"] == TRACE
    assert {t["trace_id"] for t in saga["steps"]} == {TRACE}
    request = spans.one("POST /orders", "saga-gateway")
    assert request.parent_id == CALLER
    attempts = [x for x in spans.all if x.name.startswith("saga.step ")]
    assert [a.attributes["saga.step"] for a in attempts] == list(STEP_RPCS)
    for attempt in attempts:
        assert (attempt.service, attempt.parent_id) == ("saga-gateway", request.span_id)
        assert attempt.attributes["saga.id"] == order_id
        assert server_span_under(spans, attempt).attributes["saga.id"] == order_id
    assert {x.service for x in spans.all} == {
        "saga-gateway", "saga-order", "saga-payment", "saga-inventory",
    }  # fmt: skip


def only_saga(s: Stack) -> str:
    async def find() -> str:
        with s.log() as log:
            page = await log.list_sagas(SagaFilter(), limit=10)
        (record,) = page.items
        return record.id

    return asyncio.run(find())


def transitions(s: Stack, saga_id: str) -> list[tuple[str, Phase, str | None]]:
    async def read() -> list[tuple[str, Phase, str | None]]:
        with s.log() as log:
            return [(t.step, t.phase, t.trace_id) for t in await log.transitions(saga_id)]

    return asyncio.run(read())


def everything_the_daemon_did(spans: Spans) -> bool:
    """The daemon's two attempts, and the services' answers to its calls."""
    if len(spans.named("saga.step confirm_order", "saga-recovery")) != 1:
        return False
    calls = {x.span_id for x in spans.all if x.service == "saga-recovery" and x.kind == "CLIENT"}
    answers = [x for x in spans.all if x.kind == "SERVER" and x.parent_id in calls]
    return len(answers) == 2


def test_a_saga_recovered_after_a_crash_stays_in_its_trace(tmp_path: Path) -> None:
    with OtlpReceiver() as otlp:
        env = exporting(otlp)
        # A short lease: the dead gateway's claim ends soon.
        with stack(tmp_path, gateway_env={**env, "SAGA_LEASE_S": "1"}, start_gateway=False) as s:
            gateway = s.start_gateway(SAGA_CRASH_AT="after_intent:charge_payment")
            # The gateway may die before it answers: the saga is durable either way.
            with s.client() as client, contextlib.suppress(httpx.HTTPError):
                client.post("/orders", json=ORDER, headers={
                    "traceparent": f"00-{TRACE}-{CALLER}-01"})  # fmt: skip
            assert gateway.wait(15) == -9, gateway.output()
            saga_id = only_saga(s)

            daemon = s.recovery()  # the stack's env: it exports to this receiver too
            with daemon:
                deadline = time.monotonic() + 30
                while transitions(s, saga_id)[-1][1] is not Phase.COMPLETED:
                    assert time.monotonic() < deadline, transitions(s, saga_id)
                    time.sleep(0.1)
                spans = otlp.wait_for(everything_the_daemon_did)
            report = s.audit()
    assert report.ok, report.violations

    # Every transition, the gateway's and the daemon's (its claim included), is in the trace.
    log = transitions(s, saga_id)
    assert ("", Phase.CLAIMED) in {(step, phase) for step, phase, _ in log}, log
    assert {trace for _, _, trace in log} == {TRACE}, log

    # The daemon's spans continue the trace, and the services' spans hang under them.
    resumed = [x for x in spans.all if x.service == "saga-recovery"]
    steps = [x for x in resumed if x.name.startswith("saga.step ")]
    assert [x.attributes["saga.step"] for x in steps] == ["charge_payment", "confirm_order"]
    assert {x.trace_id for x in resumed} == {TRACE}
    for attempt in steps:
        assert attempt.attributes["saga.id"] == saga_id
        assert attempt.attributes["saga.epoch"] == 2  # the daemon's claim
        assert server_span_under(spans, attempt).trace_id == TRACE
    # (The gateway's own spans may be lost: a SIGKILL drops what its batch had not sent
    # yet. The trace ids in the log are the durable record.)
