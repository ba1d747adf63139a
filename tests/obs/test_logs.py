"""Log lines say which saga and which trace they belong to: the runner's while a step
runs (saga_id, the saga's trace_id, the attempt's span_id), a service's while it answers
a saga's call (saga_id = the order id, the caller's trace_id), and every entry point of
`saga up`'s stack writes JSON lines naming its process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

from engine.definition import Done, SagaDefinition, Step, StepContext, StepResult
from engine.hooks import NullHooks
from engine.logging_setup import configure_logging
from engine.memory_log import MemorySagaLog
from engine.runner import Runner, RunnerSettings
from engine.saga_log import NewSaga
from engine.tracing import TracingHooks
from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from services.common.faults import FaultPlan
from services.common.server import start
from services.main import spec_for
from tests.services.helpers import settings_for
from tests.support.procs import base_env, free_port, grpc_serving, http_ok, tcp_open

TRACE = "5b8efff798038103d269b633813fc60c"


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """configure_logging as an entry point does (JSON lines), its stream read back."""
    previous = os.environ.pop("SAGA_LOG_FORMAT", None)
    configure_logging("test")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.getLogger().handlers.clear()
        if previous is not None:
            os.environ["SAGA_LOG_FORMAT"] = previous


async def test_a_step_s_lines_name_the_saga_its_trace_and_the_attempt(
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def charge(ctx: StepContext) -> StepResult:
        logging.getLogger("test.step").warning("charging for %s", ctx.saga_id)
        return Done()

    defn = SagaDefinition("toy", (Step("charge", charge),))
    runner = Runner(
        MemorySagaLog(),
        [defn],
        RunnerSettings(owner="me", claim=False),
        hooks=TracingHooks(NullHooks(), provider.get_tracer("test")),
    )
    await runner.start()
    await runner.start_saga(NewSaga("saga-7", "toy", b"{}", trace_id=TRACE))
    await asyncio.wait_for(runner.wait_idle(), 10)
    await runner.stop()

    (line,) = [x for x in json_logs() if x["logger"] == "test.step"]
    (span,) = exporter.get_finished_spans()
    assert span.name == "saga.step charge" and span.context is not None
    assert line["message"] == "charging for saga-7"
    assert (line["process"], line["saga_id"], line["trace_id"]) == ("test", "saga-7", TRACE)
    assert line["span_id"] == f"{span.context.span_id:016x}"


# Sampled: OpenTelemetry's server interceptor makes the span. Nothing exported (ALWAYS_OFF,
# as without OTEL_EXPORTER_OTLP_ENDPOINT): the metrics interceptor's light span does.
@pytest.mark.parametrize("sampler", [None, ALWAYS_OFF], ids=["exported", "not-exported"])
async def test_a_service_s_lines_name_the_saga_and_the_caller_s_trace(
    tmp_path: Path, json_logs: Callable[[], list[dict[str, Any]]], sampler: Sampler | None
) -> None:
    settings = settings_for("inventory", tmp_path, faults=FaultPlan(test_mode=True))
    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    running = await start(spec_for(settings), settings, tracer_provider=provider)
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            item = inventory_pb2.StockItem(product_id="prod_1", quantity=1)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Reserve(
                    inventory_pb2.ReserveRequest(order_id="order-9", items=[item]),
                    metadata=(
                        ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01"),
                        ("x-test-fault", "before"),  # UNAVAILABLE, logged as a warning
                    ),
                )
    finally:
        await running.stop(0)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    (line,) = [x for x in json_logs() if x["level"] == "WARNING"]
    assert line["message"].startswith("Reserve: ")
    assert (line["saga_id"], line["trace_id"]) == ("order-9", TRACE)
    assert line["span_id"] not in (None, "00f067aa0ba902b7"), "the call's own server span"


@pytest.mark.slow
def test_every_process_of_saga_up_writes_json_lines_naming_itself(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "recovery", "order", "payment", "inventory")}
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path / "data"),
        HTTP_ADDR=f"127.0.0.1:{ports['http']}",
        RECOVERY_METRICS_ADDR=f"127.0.0.1:{ports['recovery']}",
        ORDER_SERVICE_ADDR=f"127.0.0.1:{ports['order']}",
        PAYMENT_SERVICE_ADDR=f"127.0.0.1:{ports['payment']}",
        INVENTORY_SERVICE_ADDR=f"127.0.0.1:{ports['inventory']}",
    )
    err_path = tmp_path / "up.err"
    with err_path.open("wb") as err:
        up = subprocess.Popen(
            [sys.executable, "-m", "saga", "up"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline_ok = wait_until(
            lambda: (
                # The gateway's socket listens before its process is ready (and has set
                # its signal handlers): an answer from /healthz is what says it is.
                http_ok(f"http://127.0.0.1:{ports['http']}/healthz")
                and tcp_open("127.0.0.1", ports["recovery"])
                and all(
                    grpc_serving(f"127.0.0.1:{ports[n]}") for n in ("order", "payment", "inventory")
                )
            )
        )
        assert deadline_ok, err_path.read_text()
        os.kill(up.pid, signal.SIGTERM)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    lines = [line for line in err_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert {r["process"] for r in records} == {
        "up", "gateway", "recovery", "order", "payment", "inventory",
    }  # fmt: skip
    for r in records:
        assert {"timestamp", "level", "logger", "message", "saga_id", "trace_id"} <= set(r)


def wait_until(check: Callable[[], bool], within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
