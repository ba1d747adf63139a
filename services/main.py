"""Entry point of `saga service NAME` (the servers land with the services)."""

from __future__ import annotations

from collections.abc import Mapping

from engine.errors import EngineError


def run_service(name: str, env: Mapping[str, str]) -> None:
    raise EngineError(f"the {name} service is not built yet")
