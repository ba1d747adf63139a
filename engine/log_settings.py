"""Where the saga log lives and how it is written: one settings object that every process
(gateway, recovery daemon, operator commands) builds from the environment the same way,
and one function that opens the log it names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from engine.config import SettingsError, data_dir, env_int, env_path, env_synchronous
from engine.memory_log import MemorySagaLog
from engine.saga_log import SagaLog
from engine.sqlite import BatchStats, DbConfig
from engine.sqlite_log import SqliteSagaLog

__all__ = ["LogBackend", "SagaLogSettings", "open_saga_log"]


class LogBackend(StrEnum):
    SQLITE = "sqlite"  # the durable log: the only one a deployed process runs
    MEMORY = "memory"  # engine.memory_log: tests and benchmarks only (SAGA_ENV=test)


@dataclass(frozen=True, slots=True)
class SagaLogSettings:
    """`SAGA_LOG_DB_PATH` (else `$SAGA_DATA_DIR/saga.db`), `SAGA_SQLITE_SYNCHRONOUS`,
    `SAGA_SQLITE_BUSY_TIMEOUT_MS` and `SAGA_LOG_BACKEND`."""

    db: DbConfig = field(default_factory=lambda: DbConfig(Path("var") / "saga.db"))
    backend: LogBackend = LogBackend.SQLITE

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, path: Path | None = None) -> SagaLogSettings:
        """`path` (a command-line flag) beats the environment."""
        return cls(
            db=DbConfig(
                path or env_path(env, "SAGA_LOG_DB_PATH", data_dir(env) / "saga.db"),
                env_synchronous(env),
                env_int(env, "SAGA_SQLITE_BUSY_TIMEOUT_MS", 5_000, minimum=1),
            ),
            backend=_backend(env),
        )

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def durable(self) -> bool:
        return self.backend is LogBackend.SQLITE


def open_saga_log(
    settings: SagaLogSettings, *, on_batch: Callable[[BatchStats], None] | None = None
) -> SagaLog:
    """The log the settings name, open (blocking: file I/O and migrations). Close it with
    its `close()`."""
    if settings.backend is LogBackend.MEMORY:
        return MemorySagaLog()
    return SqliteSagaLog.open(settings.db, on_batch=on_batch)


def _backend(env: Mapping[str, str]) -> LogBackend:
    raw = (env.get("SAGA_LOG_BACKEND") or "sqlite").strip().lower()
    try:
        backend = LogBackend(raw)
    except ValueError:
        raise SettingsError(f"SAGA_LOG_BACKEND={raw!r}: expected sqlite or memory") from None
    if backend is LogBackend.MEMORY and env.get("SAGA_ENV") != "test":
        raise SettingsError(
            "SAGA_LOG_BACKEND=memory is set but SAGA_ENV is not 'test': an in-memory saga "
            "log loses every acknowledged order when the process ends; it is for tests and "
            "benchmarks only; unset SAGA_LOG_BACKEND"
        )
    return backend
