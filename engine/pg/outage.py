"""An outage of a database told once: a WARNING when it starts (which database, without
its password, and why) and an INFO when it ends, however many statements fail between.

asyncpg's pool logs each failed attempt to restore its connections with a full traceback
("Failed to restore the pool connection floor"), again and again for as long as a server
is down. A database that is down is an operating condition, not a bug: those records are
dropped (`quiet_pool_reconnects`) and the owner of each pool tells the outage through an
`Outage` fed by every statement's outcome (engine/pg/tx.py)."""

from __future__ import annotations

import logging
import time
from typing import Final

__all__ = ["Outage", "quiet_pool_reconnects"]

log = logging.getLogger("saga.pg")

_RECONNECT_NOISE: Final = "Failed to restore the pool connection floor"


class Outage:
    """Whether one database is down as its last statement saw it; logs the changes only."""

    __slots__ = ("_down_since", "_what", "_where")

    def __init__(self, where: str, *, what: str = "database") -> None:
        self._where = where  # redacted: PgConfig.redacted
        self._what = what  # what the database is to this process: "saga log", "ledger"
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, why: str) -> None:
        """A statement could not reach the database (a StorageError UNAVAILABLE)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            why = why.removeprefix(f"{self._where}: ")  # StorageError messages name it too
            log.warning("%s %s is unavailable: %s", self._what, self._where, why)

    def answered(self) -> None:
        """A statement got its answer: the database is up."""
        if self._down_since is not None:
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            log.info("%s %s is available again after %.1fs", self._what, self._where, lasted)


class _DropReconnectNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_RECONNECT_NOISE)


def quiet_pool_reconnects() -> None:
    """Drop asyncpg's per-attempt reconnect tracebacks (idempotent: one filter)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _DropReconnectNoise) for f in pool_log.filters):
        pool_log.addFilter(_DropReconnectNoise())
