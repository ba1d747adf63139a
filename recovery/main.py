"""Entry point of `saga recovery`: settings from the environment, signals, the loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping

from engine import event_loop
from engine.logging_setup import configure_logging
from engine.sqlite import end_process
from engine.telemetry import setup_tracing
from recovery.daemon import serve
from recovery.settings import RecoverySettings

__all__ = ["run_recovery"]


def run_recovery(env: Mapping[str, str]) -> None:
    settings = RecoverySettings.from_env(env)
    configure_logging("recovery")
    tracing = setup_tracing("recovery", env)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop, on_poisoned=end_process)

    try:
        event_loop.run(main())
    finally:
        tracing.shutdown()
