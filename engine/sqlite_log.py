"""The saga log on SQLite (WAL, through apsw): the durable adapter of `engine.saga_log.SagaLog`.

Writes go through the file's single group-commit `Writer` (engine/sqlite.py): each call is
one unit of a shared transaction and returns only once durable. Reads use a connection per
thread and never wait for writers (WAL). Several processes may open the same file: their
writers serialize on `BEGIN IMMEDIATE` and wait out the busy timeout.

Times are integer milliseconds and transitions are ordered by their sequence number `n`,
never by a text timestamp. `(saga, step, phase, attempt)` is unique, so the same fact can
never be recorded twice even by a buggy writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final, Self, TypeVar

import apsw

from engine.clock import HostClock, boot_id
from engine.core import ACTIVE_STATUSES, Phase, SagaStatus, Transition
from engine.errors import CommitOutcomeUnknown, MigrationError, StorageError, StorageFault
from engine.saga_log import (
    INDEXED_PAYLOAD_FIELDS,
    MINUTE_MS,
    Change,
    ChangeFn,
    CreateResult,
    MinuteCounts,
    NewSaga,
    PruneBatch,
    Pruned,
    SagaFilter,
    SagaNotFound,
    SagaPage,
    SagaRecord,
    StaleEpoch,
    Takeover,
    decode_cursor,
    encode_cursor,
    replay,
)
from engine.sqlite import (
    BatchStats,
    DbConfig,
    Writer,
    check_not_newer,
    open_connection,
    translated,
)

__all__ = ["AGE_SLACK_MS", "MIGRATIONS", "SqliteSagaLog"]

T = TypeVar("T")


def _payload_field_sql(field: str) -> str:
    """`field` of the payload, NULL unless the payload is a JSON object that has it: the
    expression of the payload-field indexes, spelled exactly so by the queries that use
    them (SQLite matches an indexed expression by its text)."""
    path = f"'$.{field}'"
    return (
        f"(CASE WHEN json_valid(CAST(payload AS TEXT)) "
        f"THEN json_extract(CAST(payload AS TEXT), {path}) END)"
    )


MIGRATIONS: Final = (
    """
    CREATE TABLE sagas (
        seq INTEGER PRIMARY KEY,  -- creation order: oldest-first claims, newest-first pages
        id TEXT NOT NULL UNIQUE,
        definition TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'NEEDS_ATTENTION')),
        payload BLOB NOT NULL,
        payload_digest TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        owner TEXT,
        lease_expires_ms INTEGER NOT NULL DEFAULT 0,  -- 0: unowned, claimable now
        epoch INTEGER NOT NULL DEFAULT 1 CHECK (epoch >= 1),
        trace_id TEXT,
        reason TEXT,
        last_n INTEGER NOT NULL DEFAULT 0,  -- sequence number of the latest transition
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX sagas_claimable ON sagas (lease_expires_ms)
        WHERE status IN ('RUNNING', 'COMPENSATING');
    CREATE INDEX sagas_owner ON sagas (owner) WHERE owner IS NOT NULL;
    CREATE INDEX sagas_status ON sagas (status, seq);
    CREATE TABLE transitions (
        saga_seq INTEGER NOT NULL REFERENCES sagas (seq),
        n INTEGER NOT NULL,
        step TEXT NOT NULL,
        phase TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        error TEXT,
        trace_id TEXT,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (saga_seq, n),
        UNIQUE (saga_seq, step, phase, attempt)
    ) WITHOUT ROWID;
    """,
    # Sagas by status, kept by triggers in the same transaction as every change: the
    # metrics read five rows instead of counting the whole table (94 ms at 1M sagas, and
    # growing, on every scrape).
    """
    CREATE TABLE saga_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO saga_counts (status, n)
        SELECT s.status, (SELECT count(*) FROM sagas WHERE sagas.status = s.status)
        FROM (SELECT 'RUNNING' AS status UNION ALL SELECT 'COMPENSATING'
              UNION ALL SELECT 'COMPLETED' UNION ALL SELECT 'COMPENSATED'
              UNION ALL SELECT 'NEEDS_ATTENTION') AS s;
    CREATE TRIGGER saga_counts_insert AFTER INSERT ON sagas BEGIN
        UPDATE saga_counts SET n = n + 1 WHERE status = NEW.status;
    END;
    CREATE TRIGGER saga_counts_update AFTER UPDATE OF status ON sagas
        WHEN OLD.status <> NEW.status BEGIN
        UPDATE saga_counts SET n = n - 1 WHERE status = OLD.status;
        UPDATE saga_counts SET n = n + 1 WHERE status = NEW.status;
    END;
    CREATE TRIGGER saga_counts_delete AFTER DELETE ON sagas BEGIN
        UPDATE saga_counts SET n = n - 1 WHERE status = OLD.status;
    END;
    """,
    # The base of the host's clock for this boot (engine/clock.py): one row.
    """
    CREATE TABLE host_clock (boot_id TEXT NOT NULL, base_ms INTEGER NOT NULL);
    """,
    # The saga explorer's reads. Sagas created and finished per minute, kept by triggers as
    # saga_counts is, so that its chart of the last hour reads sixty rows; and an index on
    # the customer of an order's payload, so that searching by customer reads an index.
    f"""
    CREATE TABLE saga_minutes (
        minute INTEGER PRIMARY KEY,  -- ms since the epoch / {MINUTE_MS}
        created INTEGER NOT NULL DEFAULT 0,
        completed INTEGER NOT NULL DEFAULT 0,
        compensated INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO saga_minutes (minute, created)
        SELECT created_ms / {MINUTE_MS}, count(*) FROM sagas WHERE true GROUP BY 1;
    INSERT INTO saga_minutes (minute, completed, compensated)
        SELECT updated_ms / {MINUTE_MS}, sum(status = 'COMPLETED'), sum(status = 'COMPENSATED')
        FROM sagas WHERE status IN ('COMPLETED', 'COMPENSATED') GROUP BY 1
        ON CONFLICT (minute) DO UPDATE SET
            completed = excluded.completed, compensated = excluded.compensated;
    CREATE TRIGGER saga_minutes_insert AFTER INSERT ON sagas BEGIN
        INSERT INTO saga_minutes (minute, created) VALUES (NEW.created_ms / {MINUTE_MS}, 1)
        ON CONFLICT (minute) DO UPDATE SET created = created + 1;
    END;
    CREATE TRIGGER saga_minutes_finish AFTER UPDATE OF status ON sagas
        WHEN OLD.status <> NEW.status AND NEW.status IN ('COMPLETED', 'COMPENSATED') BEGIN
        INSERT INTO saga_minutes (minute, completed, compensated)
            VALUES (NEW.updated_ms / {MINUTE_MS}, NEW.status = 'COMPLETED',
                    NEW.status = 'COMPENSATED')
        ON CONFLICT (minute) DO UPDATE SET
            completed = completed + excluded.completed,
            compensated = compensated + excluded.compensated;
    END;
    CREATE INDEX sagas_customer ON sagas ({_payload_field_sql("customer_id")});
    """,
    # Creation times, for lists filtered by age (see AGE_SLACK_MS).
    "CREATE INDEX sagas_created ON sagas (created_ms);",
)
# A saga is stamped (created_ms) by its writer's clock just before the write that numbers
# it (seq, in commit order), so the two orders agree up to how long a create can wait for
# the write lock. A list filtered by age reads only the seq range that can hold a match:
# found through sagas_created, bounded by a saga created more than this before (or after)
# the age asked for, then filtered exactly. Without the bound, a filter few sagas pass
# ("newer than 1m", 20 of a million) read the whole table to fill its page (190 ms at 1M).
# Exact unless a create waited longer than this between its stamp and its commit (the busy
# timeout is seconds), or the clock stepped back further.
AGE_SLACK_MS: Final = 10 * 60_000
_NO_SEQ: Final = 2**62
# Which index serves each searchable payload field (INDEXED_PAYLOAD_FIELDS).
_PAYLOAD_INDEXES: Final = {"customer_id": "sagas_customer"}
assert set(_PAYLOAD_INDEXES) == INDEXED_PAYLOAD_FIELDS

_HOST_CLOCK_VERSION: Final = 3  # the migration that made `host_clock`
_ACTIVE_SQL: Final = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)
_SAGA_COLUMNS: Final = (
    "id, definition, status, payload, idempotency_key, payload_digest, owner, "
    "lease_expires_ms, epoch, trace_id, reason, created_ms, updated_ms"
)

Row = tuple[object, ...]


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _record(row: Row) -> SagaRecord:
    (
        sid,
        definition,
        status,
        payload,
        key,
        digest,
        owner,
        lease,
        epoch,
        trace_id,
        reason,
        created,
        updated,
    ) = row
    assert isinstance(payload, bytes)
    return SagaRecord(
        id=str(sid),
        definition=str(definition),
        status=SagaStatus(str(status)),
        payload=payload,
        idempotency_key=_opt_str(key),
        payload_digest=str(digest),
        owner=_opt_str(owner),
        lease_expires_ms=_int(lease),
        epoch=_int(epoch),
        trace_id=_opt_str(trace_id),
        reason=_opt_str(reason),
        created_ms=_int(created),
        updated_ms=_int(updated),
    )


def _by_key(conn: apsw.Connection, idempotency_key: str) -> SagaRecord | None:
    row = conn.execute(
        f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE idempotency_key = ?", (idempotency_key,)
    ).fetchone()
    return None if row is None else _record(row)


def _transition(row: Row) -> Transition:
    n, step, phase, attempt, error, trace_id, at_ms = row
    return Transition(
        step=str(step),
        phase=Phase(str(phase)),
        attempt=_int(attempt),
        error=_opt_str(error),
        trace_id=_opt_str(trace_id),
        at_ms=_int(at_ms),
        seq=_int(n),
    )


def _insert_transitions(
    conn: apsw.Connection, saga_seq: int, last_n: int, ts: Sequence[Transition], now_ms: int
) -> int:
    # A transition without a trace of its own (a claim, an operator's change) is filed
    # under the saga's.
    conn.executemany(
        "INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, trace_id, at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, (SELECT trace_id FROM sagas WHERE seq = ?)), ?)",
        [
            (
                saga_seq,
                last_n + k,
                t.step,
                t.phase.value,
                t.attempt,
                t.error,
                t.trace_id,
                saga_seq,
                t.at_ms or now_ms,
            )
            for k, t in enumerate(ts, start=1)
        ],
    )
    return last_n + len(ts)


def _select_transitions(conn: apsw.Connection, saga_seq: int) -> list[Transition]:
    return [
        _transition(r)
        for r in conn.execute(
            "SELECT n, step, phase, attempt, error, trace_id, at_ms FROM transitions "
            "WHERE saga_seq = ? ORDER BY n",
            (saga_seq,),
        )
    ]


def _this_boot_s_base(conn: apsw.Connection) -> int:
    """The base of this boot's host clock: the one a process opened the log with earlier
    in this boot, else a new one (engine/clock.py). A new boot means every owner of the
    last one is dead: their leases end now, so their sagas are claimed at once instead of
    when a clock of a boot that is over says so."""
    this_boot = boot_id()
    row = conn.execute("SELECT boot_id, base_ms FROM host_clock").fetchone()
    if row is not None and row[0] == this_boot:
        return _int(row[1])
    base = HostClock.starting_now().base_ms
    conn.execute("DELETE FROM host_clock")
    conn.execute("INSERT INTO host_clock (boot_id, base_ms) VALUES (?, ?)", (this_boot, base))
    if row is not None:
        conn.execute(
            f"UPDATE sagas SET lease_expires_ms = 0 WHERE owner IS NOT NULL "
            f"AND status IN ({_ACTIVE_SQL})"
        )
    return base


class SqliteSagaLog:
    """`SagaLog` on one SQLite file. Open with `SqliteSagaLog.open(DbConfig(path))`."""

    def __init__(self, writer: Writer | None, cfg: DbConfig, clock: HostClock) -> None:
        self._writer = writer
        self._cfg = cfg
        self.clock = clock
        self._local = threading.local()
        self._readers: list[apsw.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def open(cls, cfg: DbConfig, *, on_batch: Callable[[BatchStats], None] | None = None) -> Self:
        writer = Writer(cfg, MIGRATIONS, name="saga-log-writer", on_batch=on_batch)
        try:
            base = writer.run_sync(_this_boot_s_base)
        except BaseException:
            writer.close()
            raise
        return cls(writer, cfg, HostClock(base))

    @classmethod
    def open_readonly(cls, cfg: DbConfig) -> Self:
        """Reads only: no writer, no migration, so it never takes the write lock. A look at a
        busy system (an operator's `saga ls`, the audit) then neither waits behind the
        writers nor delays them (WAL readers see the last commit); a writable open waits
        for the lock to migrate and fails past the busy timeout. Writes raise
        StorageError READONLY. The file must be a saga log this program can read."""
        ro = replace(cfg, readonly=True)
        conn = open_connection(ro)
        try:
            with translated(ro.path):
                version = int(conn.pragma("user_version"))
                check_not_newer(ro.path, version, len(MIGRATIONS))
                if version < 1:
                    raise MigrationError(
                        f"{ro.path}: not a saga log yet (schema version {version})"
                    )
                row = None
                if version >= _HOST_CLOCK_VERSION:
                    row = conn.execute("SELECT boot_id, base_ms FROM host_clock").fetchone()
        finally:
            conn.close()
        # A writer of this boot set the base; without one, nothing of this boot can hold
        # a lease, and this process's wall clock is as good a reading as any.
        this_boot = row is not None and row[0] == boot_id()
        clock = HostClock(_int(row[1])) if this_boot and row else HostClock.starting_now()
        return cls(None, ro, clock)

    @property
    def path(self) -> str:
        return str(self._cfg.path)

    def on_poisoned(self, listener: Callable[[CommitOutcomeUnknown], None]) -> None:
        """`listener` hears it when a write's COMMIT outcome turns unknown: from then on
        this log takes no more writes (`Writer.on_poisoned`). A server passes
        `engine.sqlite.end_process`. A read-only log never writes."""
        if self._writer is not None:
            self._writer.on_poisoned(listener)

    # ---- reads ---------------------------------------------------------------------------

    def _reader(self) -> apsw.Connection:
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_connection(self._cfg)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _read(self, fn: Callable[[apsw.Connection], T]) -> T:
        with translated(self._cfg.path):
            return fn(self._reader())

    async def get(self, saga_id: str) -> SagaRecord | None:
        return self.get_sync(saga_id)

    def get_sync(self, saga_id: str) -> SagaRecord | None:
        def q(conn: apsw.Connection) -> SagaRecord | None:
            row = conn.execute(
                f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE id = ?", (saga_id,)
            ).fetchone()
            return None if row is None else _record(row)

        return self._read(q)

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        return self._read(lambda conn: _by_key(conn, idempotency_key))

    async def transitions(self, saga_id: str) -> list[Transition]:
        return self.transitions_sync(saga_id)

    def transitions_sync(self, saga_id: str) -> list[Transition]:
        def q(conn: apsw.Connection) -> list[Transition]:
            row = conn.execute("SELECT seq FROM sagas WHERE id = ?", (saga_id,)).fetchone()
            if row is None:
                return []
            return _select_transitions(conn, int(row[0]))

        return self._read(q)

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        return self.list_sagas_sync(flt, limit=limit, cursor=cursor)

    def list_sagas_sync(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        where: list[str] = []
        args: list[object] = []
        if flt.definition is not None:
            where.append("definition = ?")
            args.append(flt.definition)
        if flt.statuses:
            where.append(f"status IN ({', '.join('?' for _ in flt.statuses)})")
            args.extend(s.value for s in flt.statuses)
        if flt.created_after_ms is not None:
            # Every saga numbered before one created well before the bound is older.
            where.append("created_ms >= ?")
            where.append(
                "seq > coalesce((SELECT seq FROM sagas INDEXED BY sagas_created "
                "WHERE created_ms < ? ORDER BY created_ms DESC LIMIT 1), 0)"
            )
            args.extend((flt.created_after_ms, flt.created_after_ms - AGE_SLACK_MS))
        if flt.created_before_ms is not None:
            # Every saga numbered after one created well after the bound is newer.
            where.append("created_ms < ?")
            where.append(
                "seq < coalesce((SELECT seq FROM sagas INDEXED BY sagas_created "
                f"WHERE created_ms >= ? ORDER BY created_ms LIMIT 1), {_NO_SEQ})"
            )
            args.extend((flt.created_before_ms, flt.created_before_ms + AGE_SLACK_MS))
        if cursor is not None:
            where.append("seq < ?")
            args.append(decode_cursor(cursor))
        sql = f"SELECT seq, {_SAGA_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)

        def q(conn: apsw.Connection) -> SagaPage:
            rows = conn.execute(sql, args).fetchall()
            items = tuple(_record(r[1:]) for r in rows[:limit])
            more = len(rows) > limit
            last = _int(rows[limit - 1][0]) if more and limit > 0 else None
            return SagaPage(items, None if last is None else encode_cursor(last))

        return self._read(q)

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        index = _PAYLOAD_INDEXES.get(field)
        if index is None:
            raise ValueError(f"payload field {field!r} has no index: not searchable")
        sql = (
            f"SELECT seq, {_SAGA_COLUMNS} FROM sagas INDEXED BY {index} "
            f"WHERE {_payload_field_sql(field)} = ?"
        )
        args: list[object] = [value]
        if cursor is not None:
            sql += " AND seq < ?"
            args.append(decode_cursor(cursor))
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)

        def q(conn: apsw.Connection) -> SagaPage:
            rows = conn.execute(sql, args).fetchall()
            items = tuple(_record(r[1:]) for r in rows[:limit])
            last = _int(rows[limit - 1][0]) if len(rows) > limit and limit > 0 else None
            return SagaPage(items, None if last is None else encode_cursor(last))

        return self._read(q)

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        def q(conn: apsw.Connection) -> list[MinuteCounts]:
            rows = conn.execute(
                "SELECT minute, created, completed, compensated FROM saga_minutes "
                "WHERE minute >= ? ORDER BY minute",
                (since_ms // MINUTE_MS,),
            )
            return [
                MinuteCounts(_int(m) * MINUTE_MS, _int(c), _int(done), _int(comp))
                for m, c, done, comp in rows
            ]

        return self._read(q)

    async def count_claimable(self, *, now_ms: int) -> int:
        def q(conn: apsw.Connection) -> int:
            row = conn.execute(
                f"SELECT count(*) FROM sagas WHERE status IN ({_ACTIVE_SQL}) "
                "AND lease_expires_ms < ?",
                (now_ms,),
            ).fetchone()
            return int(row[0]) if row else 0

        return self._read(q)

    async def oldest_unfinished_ms(self) -> int | None:
        def q(conn: apsw.Connection) -> int | None:
            row = conn.execute(
                f"SELECT min(created_ms) FROM sagas WHERE status IN ({_ACTIVE_SQL})"
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._read(q)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        def q(conn: apsw.Connection) -> dict[SagaStatus, int]:
            counts = dict.fromkeys(SagaStatus, 0)
            for status, n in conn.execute("SELECT status, n FROM saga_counts"):
                counts[SagaStatus(str(status))] = int(n)
            return counts

        return self._read(q)

    # ---- writes --------------------------------------------------------------------------

    async def create(
        self,
        new: NewSaga,
        *,
        owner: str | None,
        lease_expires_ms: int,
        now_ms: int,
        first: Sequence[Transition] = (),
    ) -> CreateResult:
        def unit(conn: apsw.Connection) -> CreateResult:
            if new.idempotency_key is not None:
                existing = _by_key(conn, new.idempotency_key)
                if existing is not None:
                    return replay(existing, new)
            lease = lease_expires_ms if owner is not None else 0
            seq = conn.execute(
                "INSERT INTO sagas (id, definition, status, payload, payload_digest, "
                "idempotency_key, owner, lease_expires_ms, epoch, trace_id, last_n, "
                "created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) "
                "RETURNING seq",
                (
                    new.id,
                    new.definition,
                    SagaStatus.RUNNING.value,
                    new.payload,
                    new.digest,
                    new.idempotency_key,
                    owner,
                    lease,
                    new.trace_id,
                    1 + len(first),
                    now_ms,
                    now_ms,
                ),
            ).fetchone()
            assert seq is not None
            _insert_transitions(
                conn,
                int(seq[0]),
                0,
                [Transition("", Phase.CREATED, 1, None, new.trace_id), *first],
                now_ms,
            )
            record = SagaRecord(
                id=new.id,
                definition=new.definition,
                status=SagaStatus.RUNNING,
                payload=new.payload,
                idempotency_key=new.idempotency_key,
                payload_digest=new.digest,
                owner=owner,
                lease_expires_ms=lease,
                epoch=1,
                trace_id=new.trace_id,
                reason=None,
                created_ms=now_ms,
                updated_ms=now_ms,
            )
            return CreateResult(record, created=True)

        # The SELECT-then-INSERT runs inside the writer's transaction (BEGIN IMMEDIATE), so
        # no other process can insert the same key in between: no race to lose.

        return await self._write(unit)

    async def append(
        self,
        saga_id: str,
        epoch: int,
        transitions: Sequence[Transition],
        *,
        status: SagaStatus,
        reason: str | None,
        now_ms: int,
    ) -> None:
        def unit(conn: apsw.Connection) -> None:
            row = conn.execute(
                "SELECT seq, epoch, last_n FROM sagas WHERE id = ?", (saga_id,)
            ).fetchone()
            if row is None:
                raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
            seq, current, last_n = (_int(v) for v in row)
            if current != epoch:
                raise StaleEpoch(
                    f"saga {saga_id} is at epoch {current}, the writer holds {epoch}",
                    saga_id=saga_id,
                )
            last = _insert_transitions(conn, seq, last_n, transitions, now_ms)
            conn.execute(
                "UPDATE sagas SET status = ?, reason = ?, last_n = ?, updated_ms = ? WHERE seq = ?",
                (status.value, reason, last, now_ms, seq),
            )

        await self._write(unit)

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        def unit(conn: apsw.Connection) -> list[Takeover]:
            rows = conn.execute(
                f"SELECT seq, last_n, epoch FROM sagas WHERE status IN ({_ACTIVE_SQL}) "
                "AND lease_expires_ms < ? ORDER BY seq LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            taken: list[Takeover] = []
            for seq_v, last_n, epoch in rows:
                seq, new_epoch = _int(seq_v), _int(epoch) + 1
                claimed = Transition("", Phase.CLAIMED, new_epoch, f"by {owner}")
                last = _insert_transitions(conn, seq, _int(last_n), [claimed], now_ms)
                rec = conn.execute(
                    "UPDATE sagas SET owner = ?, epoch = ?, lease_expires_ms = ?, last_n = ?, "
                    f"updated_ms = ? WHERE seq = ? RETURNING {_SAGA_COLUMNS}",
                    (owner, new_epoch, lease_expires_ms, last, now_ms, seq),
                ).fetchone()
                assert rec is not None
                taken.append(Takeover(_record(rec), tuple(_select_transitions(conn, seq))))
            return taken

        return await self._write(unit)

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        def unit(conn: apsw.Connection) -> SagaRecord:
            row = conn.execute(
                f"SELECT seq, last_n, {_SAGA_COLUMNS} FROM sagas WHERE id = ?", (saga_id,)
            ).fetchone()
            if row is None:
                raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
            seq, last_n = _int(row[0]), _int(row[1])
            record = _record(row[2:])
            change: Change = fn(record, _select_transitions(conn, seq))
            last = _insert_transitions(conn, seq, last_n, change.transitions, now_ms)
            rec = conn.execute(
                "UPDATE sagas SET owner = NULL, lease_expires_ms = 0, epoch = epoch + 1, "
                "status = ?, reason = ?, last_n = ?, updated_ms = ? "
                f"WHERE seq = ? RETURNING {_SAGA_COLUMNS}",
                (change.status.value, change.reason, last, now_ms, seq),
            ).fetchone()
            assert rec is not None
            return _record(rec)

        return await self._write(unit)

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        after = 0 if cursor is None else decode_cursor(cursor)

        def unit(conn: apsw.Connection) -> Pruned:
            # Up to `limit` sagas in creation order, whatever their status, so that one
            # batch (one write transaction) costs a bounded time however the log looks.
            rows = conn.execute(
                "SELECT seq, last_n, status, created_ms, updated_ms, "
                "(SELECT phase FROM transitions WHERE saga_seq = seq AND n = last_n) "
                "FROM sagas WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
            batch = PruneBatch(finished_before_ms)
            for seq, last_n, status, created_ms, updated_ms, last in rows:
                last_phase = None if last is None else Phase(str(last))
                record = (_int(created_ms), SagaStatus(str(status)), _int(updated_ms))
                if not batch.wants(*record, last_phase):
                    continue
                args = (_int(seq), _int(last_n))
                if dry_run:
                    row = conn.execute(
                        "SELECT count(*) FROM transitions WHERE saga_seq = ? AND n < ?", args
                    ).fetchone()
                    deleted = 0 if row is None else _int(row[0])
                else:
                    conn.execute("DELETE FROM transitions WHERE saga_seq = ? AND n < ?", args)
                    deleted = int(conn.changes())
                batch.pruned(deleted)
            last = _int(rows[-1][0]) if rows else after
            return batch.result(len(rows), limit, encode_cursor(last))

        return self._read(unit) if dry_run else await self._write(unit)

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        def unit(conn: apsw.Connection) -> int:
            conn.execute(
                f"UPDATE sagas SET lease_expires_ms = ? WHERE owner = ? "
                f"AND status IN ({_ACTIVE_SQL})",
                (lease_expires_ms, owner),
            )
            return int(conn.changes())

        return await self._write(unit)

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        def unit(conn: apsw.Connection) -> int:
            sql = (
                "UPDATE sagas SET owner = NULL, lease_expires_ms = 0 WHERE owner = ? "
                f"AND status IN ({_ACTIVE_SQL})"
            )
            if saga_ids is None:
                conn.execute(sql, (owner,))
                return int(conn.changes())
            total = 0
            for sid in saga_ids:
                conn.execute(sql + " AND id = ?", (owner, sid))
                total += int(conn.changes())
            return total

        return await self._write(unit)

    async def _write(self, unit: Callable[[apsw.Connection], T]) -> T:
        if self._writer is None:
            raise StorageError(
                StorageFault.READONLY,
                f"{self.path}: the saga log was opened read-only",
                path=self.path,
            )
        return await self._writer.run(unit)

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        if self._writer is not None:
            self._writer.close()
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
