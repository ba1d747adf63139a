"""Entry point of `saga service NAME`: settings from the environment, then serve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import event_loop
from engine.logging_setup import configure_logging
from engine.telemetry import setup_tracing
from services.common.server import ServiceSpec, serve
from services.settings import ServiceName, ServiceSettings

__all__ = ["run_service", "spec_for"]


def spec_for(settings: ServiceSettings) -> ServiceSpec[Any]:
    # Imported here so that one service does not load the others' modules.
    if settings.name is ServiceName.INVENTORY:
        from services.inventory import servicer as inventory

        return inventory.spec(settings)
    if settings.name is ServiceName.PAYMENT:
        from services.payment import servicer as payment

        return payment.spec(settings)
    from services.order import servicer as order

    return order.spec(settings)


def run_service(name: str, env: Mapping[str, str]) -> None:
    """Run one service until SIGTERM/SIGINT. A bad setting, an unusable ledger or a taken
    address raises an EngineError, which the CLI prints as one line."""
    settings = ServiceSettings.from_env(name, env)
    configure_logging(settings.name.value)
    tracing = setup_tracing(settings.name.value, env)
    try:
        event_loop.run(serve(spec_for(settings), settings))
    finally:
        tracing.shutdown()
