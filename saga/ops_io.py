"""The operator commands' side of the saga log: which file, opening it safely, reading
pages, applying retries and cancels (engine/operations.py) and waiting for sagas to end.

The log is shared: a live gateway and recovery daemon may be writing it while these run.
That is safe by construction (WAL readers never block writers; each change is one
`BEGIN IMMEDIATE` transaction that re-reads the saga, bumps its epoch and leaves it
unowned), so nothing here locks or pauses anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from engine.core import ACTIVE_STATUSES, Transition
from engine.definition import SagaDefinition
from engine.errors import EngineError
from engine.log_settings import LogBackend, SagaLogSettings
from engine.operations import cancel_saga, retry_saga
from engine.saga_log import SagaFilter, SagaLog, SagaPage, SagaRecord
from engine.sqlite import DbConfig, open_connection
from engine.sqlite_log import SqliteSagaLog
from engine.sync_log import SyncSagaLog
from orders.saga import ORDER_SAGA, OrderSagaPolicy, order_saga_shape
from saga.errors import NoSagaLog
from saga.ops_model import Outcome, OutcomeKind, Verb

__all__ = [
    "NoSagaLog",
    "OpsLog",
    "OpsSettings",
    "act",
    "act_many",
    "definitions",
    "open_log",
    "select",
    "wait_for_end",
]

PAGE: Final = 500
# Changes in flight at once in a bulk action: enough for the log's group commit to fold
# many into one fsync, few enough that a slow disk does not queue thousands.
CONCURRENCY: Final = 32


@dataclass(frozen=True, slots=True)
class OpsSettings:
    log: SagaLogSettings
    actor: str  # recorded in the log with each change ("resumed by …")
    # The budgets the gateway and the daemon run with (same variables), so that `show`
    # tells what they would do next, not what a default policy would.
    saga_policy: OrderSagaPolicy = field(default_factory=OrderSagaPolicy)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        data_dir_flag: Path | None = None,
        log_db_flag: Path | None = None,
        host: str = "",
    ) -> OpsSettings:
        """The same file every process uses: SAGA_LOG_DB_PATH, else $SAGA_DATA_DIR/saga.db.
        A flag beats the environment: --log-db names the file, --data-dir its folder."""
        path = log_db_flag or (data_dir_flag / "saga.db" if data_dir_flag else None)
        user = env.get("USER") or env.get("LOGNAME") or "operator"
        return cls(
            log=SagaLogSettings.from_env(env, path=path.expanduser() if path else None),
            actor=f"saga-cli:{user}@{host}" if host else f"saga-cli:{user}",
            saga_policy=OrderSagaPolicy.from_env(env),
        )


def definitions(settings: OpsSettings) -> dict[str, SagaDefinition]:
    """The definitions this program knows, shaped as the gateway and the daemon run them."""
    return {ORDER_SAGA: order_saga_shape(settings.saga_policy)}


def _check_is_saga_log(cfg: DbConfig) -> None:
    """Refuse a path that is missing or is some other SQLite file before opening it for
    writing: opening would create the file, or add the log's tables to someone's ledger."""
    if not cfg.path.is_file():
        raise NoSagaLog(
            f"no saga log at {cfg.path}; set SAGA_DATA_DIR (or SAGA_LOG_DB_PATH, --data-dir)"
        )
    conn = open_connection(DbConfig(cfg.path, busy_timeout_ms=cfg.busy_timeout_ms, readonly=True))
    try:
        names = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_schema")}
    finally:
        conn.close()
    if not {"sagas", "transitions"} <= names:
        raise NoSagaLog(f"{cfg.path} is not a saga log (no sagas table)")


class OpsLog(SagaLog, Protocol):
    """The log as the commands use it: the port, plus reads that need no event loop."""

    def get_sync(self, saga_id: str) -> SagaRecord | None: ...

    def transitions_sync(self, saga_id: str) -> list[Transition]: ...

    def list_sagas_sync(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage: ...

    def close_sync(self) -> None: ...


@contextlib.contextmanager
def open_log(settings: OpsSettings, *, readonly: bool = False) -> Iterator[OpsLog]:
    """The saga log; `readonly` for commands that only look, so that they never wait for
    (or hold up) the write lock of a live system. A PostgreSQL log never makes anyone
    wait for a read; it must exist (a wrong URL gets no log made in it)."""
    log: OpsLog
    if settings.log.backend is LogBackend.POSTGRES:
        log = SyncSagaLog.open(settings.log)
        try:
            yield log
        finally:
            log.close_sync()
        return
    cfg = settings.log.db
    _check_is_saga_log(cfg)
    log = SqliteSagaLog.open_readonly(cfg) if readonly else SqliteSagaLog.open(cfg)
    try:
        yield log
    finally:
        log.close_sync()


def select(log: OpsLog, flt: SagaFilter, *, limit: int | None) -> list[SagaRecord]:
    """Every saga the filter matches (up to `limit`), newest first, page by page. A saga
    created while this reads may or may not be in it; none is listed twice."""
    out: list[SagaRecord] = []
    cursor: str | None = None
    while limit is None or len(out) < limit:
        size = PAGE if limit is None else min(PAGE, limit - len(out))
        page = log.list_sagas_sync(flt, limit=size, cursor=cursor)
        out.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return out


async def act(
    log: OpsLog, verb: Verb, saga_id: str, *, settings: OpsSettings, now_ms: int
) -> SagaRecord:
    """One operator's change; raises CannotChange (refused) or SagaNotFound."""
    defs, actor = definitions(settings), settings.actor
    if verb is Verb.RETRY:
        return await retry_saga(log, defs, saga_id, actor=actor, now_ms=now_ms)
    return await cancel_saga(log, defs, saga_id, actor=actor, now_ms=now_ms)


async def act_many(
    log: OpsLog,
    verb: Verb,
    saga_ids: Sequence[str],
    *,
    settings: OpsSettings,
    clock: Callable[[], int],
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    """The change on each saga, independently: one refusal or failure stops nothing else."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(saga_id: str) -> Outcome:
        async with gate:
            try:
                record = await act(log, verb, saga_id, settings=settings, now_ms=clock())
            except EngineError as exc:
                outcome = Outcome.of_error(saga_id, exc)
            else:
                outcome = Outcome(saga_id, OutcomeKind.DONE, status=record.status)
        on_outcome(outcome)
        return outcome

    return list(await asyncio.gather(*(one(sid) for sid in saga_ids)))


def wait_for_end(
    log: OpsLog, saga_ids: Sequence[str], timeout_s: float, *, poll_s: float = 0.1
) -> dict[str, SagaRecord]:
    """Poll until none of the sagas is RUNNING or COMPENSATING (finished, or parked again)
    or the time is up; their records as last read."""
    deadline = time.monotonic() + timeout_s
    pending = list(saga_ids)
    latest: dict[str, SagaRecord] = {}
    while True:
        still: list[str] = []
        for sid in pending:
            record = log.get_sync(sid)
            if record is None:
                continue
            latest[sid] = record
            if record.status in ACTIVE_STATUSES:
                still.append(sid)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return latest
        time.sleep(poll_s)
