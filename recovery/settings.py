"""The recovery daemon's settings, built once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.config import Address, env_addr, env_duration_ms, env_float, env_int
from engine.crashpoints import CrashPoints
from orders.runtime import DriveSettings

__all__ = ["RecoverySettings"]


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    drive: DriveSettings  # the log, services, budgets, lease and drain, as the gateway's
    interval_s: float
    concurrency: int
    metrics_addr: Address
    crash: CrashPoints
    history_retention_ms: int | None  # prune finished sagas' history past it; None: keep
    prune_interval_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RecoverySettings:
        return cls(
            drive=DriveSettings.from_env(env),
            interval_s=env_float(env, "SAGA_RECOVERY_INTERVAL_S", 5.0, minimum=0.05),
            concurrency=env_int(env, "SAGA_RECOVERY_CONCURRENCY", 128, minimum=1),
            metrics_addr=env_addr(env, "RECOVERY_METRICS_ADDR", "127.0.0.1:9464"),
            crash=CrashPoints.from_env(env),
            history_retention_ms=env_duration_ms(env, "SAGA_HISTORY_RETENTION"),
            prune_interval_s=env_float(env, "SAGA_PRUNE_INTERVAL_S", 600.0, minimum=0.05),
        )
