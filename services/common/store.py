"""A service's ledger file: the group-commit Writer for every mutation, and one read
connection for the queries, both opened by engine/sqlite.py.

Reads run on their own connection so that an audit listing never waits behind a batch's
fsync, and each read is one snapshot (`BEGIN … COMMIT` of a read-only transaction), so a
query that reads two tables sees one consistent state. WAL lets it run beside the writer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import apsw

from engine.errors import CommitOutcomeUnknown, StorageError, StorageFault
from engine.sqlite import DbConfig, Writer, open_connection, storage_error
from services.common.errors import LedgerOpenError

__all__ = ["LedgerStore"]

T = TypeVar("T")


class LedgerStore:
    def __init__(self, cfg: DbConfig, migrations: Sequence[str], *, name: str = "ledger") -> None:
        self.cfg = cfg
        try:
            self.writer = Writer(cfg, migrations, name=f"{name}-writer")
        except OSError as exc:  # e.g. a file where the data folder should be
            raise LedgerOpenError(
                f"{cfg.path}: cannot open the ledger: {exc.strerror or exc}"
            ) from exc
        try:
            self._reader = open_connection(cfg)
        except BaseException:
            self.writer.close()
            raise
        self._read_lock = threading.Lock()
        self._closed = False

    async def write(self, unit: Callable[[apsw.Connection], T]) -> T:
        """Run `unit` in the writer's next group commit; return once it is durable."""
        return await self.writer.run(unit)

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        """`listener` hears it when a write's COMMIT outcome turns unknown: from then on
        the ledger takes no more writes (`Writer.on_poisoned`)."""
        self.writer.on_poisoned(listener)

    async def read(self, query: Callable[[apsw.Connection], T]) -> T:
        """Run `query` on one snapshot of the committed state, off the event loop."""
        return await asyncio.to_thread(self.read_sync, query)

    def read_sync(self, query: Callable[[apsw.Connection], T]) -> T:
        with self._read_lock:
            if self._closed:
                raise StorageError(StorageFault.IO, f"{self.cfg.path}: the ledger is closed")
            conn = self._reader
            try:
                conn.execute("BEGIN")
                try:
                    return query(conn)
                finally:
                    conn.execute("COMMIT")  # read-only: ends the snapshot, writes nothing
            except apsw.Error as exc:
                translated = storage_error(exc, self.cfg.path)
                if translated is None:
                    raise
                raise translated from exc

    def close(self) -> None:
        """Finish the queued writes, then close both connections."""
        with self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
        self.writer.close()
