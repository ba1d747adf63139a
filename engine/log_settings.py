"""Where the saga log lives and how it is written: one settings object that every process
(gateway, recovery daemon, operator commands) builds from the environment the same way,
and one function that opens the log it names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from engine.config import SettingsError, data_dir, env_int, env_path, env_synchronous
from engine.errors import StorageError, StorageFault
from engine.memory_log import MemorySagaLog
from engine.pg.outage import Outage
from engine.pg.settings import PgConfig, database_url
from engine.saga_log import SagaLog
from engine.sqlite import BatchStats, DbConfig
from engine.sqlite_log import SqliteSagaLog

__all__ = ["LogBackend", "SagaLogSettings", "open_saga_log", "open_saga_log_patiently"]

# While a database cannot be reached at start-up: attempts at random waits growing from
# ~0.25 s to at most 5 s, so that many processes started together do not reconnect in step.
_PATIENT_FIRST_S: Final = 0.25
_PATIENT_MAX_S: Final = 5.0


class LogBackend(StrEnum):
    SQLITE = "sqlite"  # the embedded durable log: one host (the default)
    POSTGRES = "postgres"  # SAGA_DATABASE_URL: one log shared by many hosts
    MEMORY = "memory"  # engine.memory_log: tests and benchmarks only (SAGA_ENV=test)


@dataclass(frozen=True, slots=True)
class SagaLogSettings:
    """`SAGA_DATABASE_URL` (a PostgreSQL log), else the SQLite file: `SAGA_LOG_DB_PATH`
    (else `$SAGA_DATA_DIR/saga.db`), `SAGA_SQLITE_SYNCHRONOUS`,
    `SAGA_SQLITE_BUSY_TIMEOUT_MS`; `SAGA_LOG_BACKEND=memory` for tests."""

    db: DbConfig = field(default_factory=lambda: DbConfig(Path("var") / "saga.db"))
    backend: LogBackend = LogBackend.SQLITE
    database: PgConfig | None = None  # set iff backend is POSTGRES

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, path: Path | None = None) -> SagaLogSettings:
        """`path` (a command-line flag naming a SQLite file) beats the environment,
        SAGA_DATABASE_URL included."""
        database = database_url(env, "SAGA_DATABASE_URL")
        backend = _backend(env)
        if path is not None:
            database = None
        elif database is not None:
            if backend is LogBackend.MEMORY:
                raise SettingsError(
                    "SAGA_LOG_BACKEND=memory and SAGA_DATABASE_URL are both set: unset one of them"
                )
            backend = LogBackend.POSTGRES
        return cls(
            db=DbConfig(
                path or env_path(env, "SAGA_LOG_DB_PATH", data_dir(env) / "saga.db"),
                env_synchronous(env),
                env_int(env, "SAGA_SQLITE_BUSY_TIMEOUT_MS", 5_000, minimum=1),
            ),
            backend=backend,
            database=database,
        )

    @property
    def path(self) -> Path:
        """The SQLite file (meaningless for the other backends: see `where`)."""
        return self.db.path

    @property
    def where(self) -> str:
        """Where the log is, for people: the file, or the URL without its password."""
        if self.database is not None:
            return self.database.redacted
        if self.backend is LogBackend.MEMORY:
            return "in memory, test only: nothing is durable"
        return str(self.db.path)

    @property
    def durable(self) -> bool:
        return self.backend is not LogBackend.MEMORY


async def open_saga_log(
    settings: SagaLogSettings,
    *,
    on_batch: Callable[[BatchStats], None] | None = None,
    application_name: str = "saga",
    create: bool = True,
) -> SagaLog:
    """The log the settings name, open (migrated). Close it with its `close()`. The one
    way every process opens its log; a synchronous caller uses engine/sync_log.py.
    `create=False` refuses a database without a saga log (operator commands: a wrong URL
    must not get a log made in it); the SQLite callers check their file themselves."""
    if settings.backend is LogBackend.MEMORY:
        return MemorySagaLog()
    if settings.database is not None:
        from engine.pg_log import PgSagaLog  # asyncpg is loaded only by who needs it

        return await PgSagaLog.open(
            settings.database,
            on_batch=on_batch,
            application_name=application_name,
            create=create,
        )
    return await asyncio.to_thread(SqliteSagaLog.open, settings.db, on_batch=on_batch)


async def open_saga_log_patiently(
    settings: SagaLogSettings,
    *,
    on_waiting: Callable[[StorageError], None],
    on_batch: Callable[[BatchStats], None] | None = None,
    application_name: str = "saga",
) -> SagaLog:
    """`open_saga_log`, waiting for a database that cannot be reached yet (down, starting,
    failing over) instead of failing: attempts again with a jittered backoff, for as long
    as it takes (cancel the caller to give up). `on_waiting` hears the first failure, once,
    so that a server process can serve "unavailable" meanwhile. Anything else (a wrong
    password, no such database, a schema newer than this program) is raised at once: a
    user's mistake that no wait will mend. The outage is logged once when it starts and
    once when it ends (engine/pg/outage.py)."""
    outage = Outage(settings.where, what="saga log")

    def waiting(state: RetryCallState) -> None:
        assert state.outcome is not None
        err = state.outcome.exception()
        assert isinstance(err, StorageError)
        if not outage.down:
            outage.failed(err.message)
            on_waiting(err)

    retrying = AsyncRetrying(
        wait=wait_random_exponential(multiplier=_PATIENT_FIRST_S, max=_PATIENT_MAX_S),
        retry=retry_if_exception(_unreachable),
        before_sleep=waiting,
        reraise=True,
    )

    async def attempt() -> SagaLog:  # a coroutine function: tenacity awaits only those
        return await open_saga_log(settings, on_batch=on_batch, application_name=application_name)

    opened: SagaLog = await retrying(attempt)
    outage.answered()
    return opened


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.fault is StorageFault.UNAVAILABLE


def _backend(env: Mapping[str, str]) -> LogBackend:
    raw = (env.get("SAGA_LOG_BACKEND") or "sqlite").strip().lower()
    if raw not in (LogBackend.SQLITE, LogBackend.MEMORY):
        raise SettingsError(
            f"SAGA_LOG_BACKEND={raw!r}: expected sqlite or memory "
            "(for PostgreSQL, set SAGA_DATABASE_URL)"
        )
    backend = LogBackend(raw)
    if backend is LogBackend.MEMORY and env.get("SAGA_ENV") != "test":
        raise SettingsError(
            "SAGA_LOG_BACKEND=memory is set but SAGA_ENV is not 'test': an in-memory saga "
            "log loses every acknowledged order when the process ends; it is for tests and "
            "benchmarks only; unset SAGA_LOG_BACKEND"
        )
    return backend
