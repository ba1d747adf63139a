"""Structured JSON logs, configured only at entry points.

Every record carries timestamp, level, process (its role: gateway, recovery, order…),
and, when known, the `saga_id` being driven (a context variable the runner sets per
saga task) and the current OpenTelemetry `trace_id` and `span_id`.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from typing import Final

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from engine.config import SettingsError

__all__ = ["SAGA_ID", "configure_logging"]

# The saga a task is driving; set by the runner for the life of each saga task.
SAGA_ID: ContextVar[str | None] = ContextVar("saga_id", default=None)


class _ContextFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn adds a copy of its message with terminal colour codes: not for JSON.
        record.__dict__.pop("color_message", None)
        record.process_name = self._role
        record.saga_id = SAGA_ID.get()
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else None
        record.span_id = f"{ctx.span_id:016x}" if ctx.is_valid else None
        return True


_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(role: str, *, level: str | None = None) -> None:
    """JSON lines on stderr for this process. `SAGA_LOG_FORMAT=text` gives plain text for
    a human at a terminal; `SAGA_LOG_LEVEL` sets the level (INFO). A value it does not
    know is a SettingsError, before anything is logged."""
    chosen = (level or os.environ.get("SAGA_LOG_LEVEL") or "INFO").strip().upper()
    if chosen not in _LEVELS:
        raise SettingsError(
            f"SAGA_LOG_LEVEL={chosen.lower()!r}: expected one of {', '.join(_LEVELS)}"
        )
    form = (os.environ.get("SAGA_LOG_FORMAT") or "json").strip().lower()
    if form not in ("json", "text"):
        raise SettingsError(f"SAGA_LOG_FORMAT={form!r}: expected json or text")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(role))
    if form == "text":
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(process_name)s %(name)s %(message)s")
        )
    else:
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(process_name)s %(name)s %(message)s "
                "%(saga_id)s %(trace_id)s %(span_id)s",
                rename_fields={"levelname": "level", "process_name": "process", "name": "logger"},
                timestamp=True,
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
