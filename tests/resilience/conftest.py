"""Resilience suites: real processes, real SIGKILL, real sockets; the audit is the judge.

Sizes are CI-sized by default; `scripts/soak` (pytest -m soak) runs the long versions and
prints a summary table."""

from __future__ import annotations

import os


def soak_scale() -> int:
    """How much bigger a soak run is than the CI run (SAGA_SOAK_SCALE, default 10)."""
    return int(os.environ.get("SAGA_SOAK_SCALE", "10"))
