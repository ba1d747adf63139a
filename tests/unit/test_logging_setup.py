"""JSON log lines carry the process role, the saga being driven and the trace."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from engine.logging_setup import SAGA_ID, configure_logging


def test_json_lines_name_the_saga_and_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("gateway")
    tracer = TracerProvider().get_tracer("test")
    token = SAGA_ID.set("saga-42")
    try:
        with tracer.start_as_current_span("step") as span:
            logging.getLogger("engine.runner").warning("step %s failed", "reserve")
            ctx = span.get_span_context()
    finally:
        SAGA_ID.reset(token)
        logging.getLogger().handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "step reserve failed"
    assert line["level"] == "WARNING"
    assert line["process"] == "gateway"
    assert line["saga_id"] == "saga-42"
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert line["timestamp"].endswith("+00:00")


def test_uvicorn_s_colour_copy_of_a_message_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("gateway")
    try:
        logging.getLogger("uvicorn.error").info(
            "Finished server process [%d]", 7, extra={"color_message": "\x1b[36m%d\x1b[0m"}
        )
    finally:
        logging.getLogger().handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "Finished server process [7]"
    assert "color_message" not in line
