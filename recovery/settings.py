"""The recovery daemon's settings, built once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.config import (
    Address,
    data_dir,
    env_addr,
    env_duration_ms,
    env_float,
    env_int,
    env_path,
    env_synchronous,
)
from engine.crashpoints import CrashPoints
from engine.sqlite import Synchronous
from orders.participants import ServiceAddresses
from orders.saga import OrderSagaPolicy

__all__ = ["RecoverySettings"]


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    log_path: Path
    synchronous: Synchronous
    lease_s: float
    interval_s: float
    concurrency: int
    drain_s: float
    metrics_addr: Address
    services: ServiceAddresses
    crash: CrashPoints
    saga_policy: OrderSagaPolicy
    history_retention_ms: int | None  # prune finished sagas' history past it; None: keep
    prune_interval_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RecoverySettings:
        folder = data_dir(env)
        return cls(
            log_path=env_path(env, "SAGA_LOG_DB_PATH", folder / "saga.db"),
            synchronous=env_synchronous(env),
            lease_s=env_float(env, "SAGA_LEASE_S", 10.0, minimum=0.1),
            interval_s=env_float(env, "SAGA_RECOVERY_INTERVAL_S", 5.0, minimum=0.05),
            concurrency=env_int(env, "SAGA_RECOVERY_CONCURRENCY", 128, minimum=1),
            drain_s=env_float(env, "SAGA_DRAIN_S", 10.0),
            metrics_addr=env_addr(env, "RECOVERY_METRICS_ADDR", "127.0.0.1:9464"),
            services=ServiceAddresses.from_env(env),
            crash=CrashPoints.from_env(env),
            saga_policy=OrderSagaPolicy.from_env(env),
            history_retention_ms=env_duration_ms(env, "SAGA_HISTORY_RETENTION"),
            prune_interval_s=env_float(env, "SAGA_PRUNE_INTERVAL_S", 600.0, minimum=0.05),
        )
