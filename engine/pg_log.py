"""The saga log on PostgreSQL (through asyncpg): an adapter of `engine.saga_log.SagaLog`
shared by any number of gateways, recovery daemons and operator commands on any hosts.

Writes of new sagas and appends go through a group commit: whatever callers queue while
a transaction is in flight is written by the next one, with one array statement for all
its creates and one for all its appends, each saga fenced on its own epoch (a stale
writer gets StaleEpoch alone; the others are written). Every commit is synchronous, epoch
bumps included. Claims are short transactions over a bounded batch taken with
`FOR UPDATE SKIP LOCKED`, so claimers never wait on one another. Time is the server's
(engine/pg/clock.py), and a lease's expiry is finally judged in SQL by the server's clock.

Nothing depends on LISTEN/NOTIFY: claimers poll (engine/claims.py). Errors follow
engine/pg/errors.py: the server down is a StorageError (nothing was written), a COMMIT
cut off is CommitOutcomeUnknown (the caller retries with its idempotency key); neither
stops the log: the next call opens a new connection, so a process carries on by itself
once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Self, TypeVar

import asyncpg

from engine.core import Phase, SagaStatus, Transition
from engine.errors import EngineError, MigrationError
from engine.pg import PgConfig, Retry, migrate, open_pool, read, schema_version, transaction
from engine.pg.clock import REMEASURE_S, ServerClock
from engine.pg.outage import Outage
from engine.pg.pool import Conn
from engine.pg_log_batch import GroupCommit, record, transition
from engine.pg_log_schema import (
    ACTIVE,
    CLAIM,
    COLUMNS,
    MIGRATIONS,
    NOW_MS,
    SCHEMA,
    TRANSITION_COLUMNS,
)
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
    Takeover,
    decode_cursor,
    encode_cursor,
)
from engine.sqlite import BatchStats

__all__ = ["PgSagaLog"]

T = TypeVar("T")
log = logging.getLogger(__name__)

POOL_MIN: Final = 2
POOL_MAX: Final = 10
# The column (filled at creation, indexed) of each searchable payload field.
_PAYLOAD_COLUMNS: Final = {"customer_id": "customer_id"}
assert set(_PAYLOAD_COLUMNS) == INDEXED_PAYLOAD_FIELDS


def _count(status: str) -> int:
    """Rows changed, from a command tag such as `UPDATE 3`."""
    return int(status.rpartition(" ")[2] or 0)


async def _transitions_of(conn: Conn, seq: int) -> list[Transition]:
    rows = await conn.fetch(
        f"SELECT {TRANSITION_COLUMNS} FROM transitions WHERE saga_seq = $1 ORDER BY n", seq
    )
    return [transition(r) for r in rows]


async def _insert_transitions(
    conn: Conn, seq: int, last_n: int, ts: Sequence[Transition], now_ms: int
) -> int:
    if ts:
        await conn.execute(
            "INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, trace_id, at_ms) "
            "SELECT $1, $2 + j, step, phase, attempt, error, "
            "coalesce(trace_id, (SELECT trace_id FROM sagas WHERE seq = $1)), at_ms "
            "FROM unnest($3::text[], $4::text[], $5::integer[], $6::text[], $7::text[], "
            "$8::bigint[]) WITH ORDINALITY AS t(step, phase, attempt, error, trace_id, at_ms, j)",
            seq,
            last_n,
            [t.step for t in ts],
            [t.phase.value for t in ts],
            [t.attempt for t in ts],
            [t.error for t in ts],
            [t.trace_id for t in ts],
            [t.at_ms or now_ms for t in ts],
        )
    return last_n + len(ts)


async def _check_is_saga_log(pool: asyncpg.Pool, where: str) -> None:
    async def version(conn: Conn) -> int:
        return await schema_version(conn, SCHEMA)

    if await read(pool, version, where=where) == 0:
        raise MigrationError(
            f"{where}: no saga log in this database yet (schema {SCHEMA!r} is missing); "
            "a gateway or recovery daemon started on it makes one"
        )


# ---- the adapter ---------------------------------------------------------------------------


class PgSagaLog:
    """`SagaLog` in a PostgreSQL database. Open with `await PgSagaLog.open(cfg)`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cfg: PgConfig,
        clock: ServerClock,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._pool = pool
        self._cfg = cfg
        self.clock = clock
        self._where = cfg.redacted
        self._outage = Outage(self._where, what="saga log")
        self._commits = GroupCommit(pool, self._where, on_batch, self._outage)
        self._clock_task = asyncio.create_task(self._keep_time(), name="pg-saga-log-clock")

    @classmethod
    async def open(
        cls,
        cfg: PgConfig,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        application_name: str = "saga",
        create: bool = True,
    ) -> Self:
        """Open a pool, migrate the schema (once, whoever else starts now), read the
        server's clock. StorageError when the server cannot be reached; SchemaTooNew for
        a database a later program migrated. `create=False` (the operator commands)
        refuses a database that holds no saga log yet instead of making one in it."""
        pool = await open_pool(
            cfg,
            min_size=min_size,
            max_size=max_size,
            application_name=application_name,
            search_path=SCHEMA,
        )
        try:
            if not create:
                await _check_is_saga_log(pool, cfg.redacted)
            await migrate(pool, schema=SCHEMA, migrations=MIGRATIONS, where=cfg.redacted)
            clock = await read(pool, ServerClock.measured, where=cfg.redacted)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, cfg, clock, on_batch=on_batch)

    @property
    def path(self) -> str:
        """Where the log is, for messages: the URL without its password."""
        return self._where

    async def _keep_time(self) -> None:
        while True:
            await asyncio.sleep(REMEASURE_S)
            try:
                once = Retry(attempts=1)
                await read(
                    self._pool,
                    self.clock.measure,
                    where=self._where,
                    retry=once,
                    outage=self._outage,
                )
            except EngineError as exc:  # keep the last offset: it drifts by µs a minute
                if not self._outage.down:  # an outage is told once, by the Outage
                    log.info("could not read the database's clock: %s", exc.message)

    async def _read(self, query: Callable[[Conn], Awaitable[T]]) -> T:
        return await read(self._pool, query, where=self._where, outage=self._outage)

    async def _write(self, unit: Callable[[Conn], Awaitable[T]]) -> T:
        return await transaction(self._pool, unit, where=self._where, outage=self._outage)

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaRecord | None:
        async def q(conn: Conn) -> SagaRecord | None:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM sagas WHERE id = $1", saga_id)
            return None if row is None else record(row)

        return await self._read(q)

    async def get_by_key(self, idempotency_key: str) -> SagaRecord | None:
        async def q(conn: Conn) -> SagaRecord | None:
            row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM sagas WHERE idempotency_key = $1", idempotency_key
            )
            return None if row is None else record(row)

        return await self._read(q)

    async def transitions(self, saga_id: str) -> list[Transition]:
        async def q(conn: Conn) -> list[Transition]:
            rows = await conn.fetch(
                f"SELECT {TRANSITION_COLUMNS} FROM transitions "
                "WHERE saga_seq = (SELECT seq FROM sagas WHERE id = $1) ORDER BY n",
                saga_id,
            )
            return [transition(r) for r in rows]

        return await self._read(q)

    async def list_sagas(
        self, flt: SagaFilter, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        where: list[str] = []
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.definition is not None:
            where.append(f"definition = {arg(flt.definition)}")
        if flt.statuses:
            where.append(f"status = ANY({arg([s.value for s in flt.statuses])}::text[])")
        if flt.created_after_ms is not None:
            where.append(f"created_ms >= {arg(flt.created_after_ms)}")
        if flt.created_before_ms is not None:
            where.append(f"created_ms < {arg(flt.created_before_ms)}")
        if cursor is not None:
            where.append(f"seq < {arg(decode_cursor(cursor))}")
        sql = f"SELECT seq, {COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq DESC LIMIT {arg(limit + 1)}"
        return await self._read(lambda conn: self._page(conn, sql, args, limit))

    @staticmethod
    async def _page(conn: Conn, sql: str, args: Sequence[object], limit: int) -> SagaPage:
        rows = await conn.fetch(sql, *args)
        items = tuple(record(r) for r in rows[:limit])
        last = int(rows[limit - 1]["seq"]) if len(rows) > limit and limit > 0 else None
        return SagaPage(items, None if last is None else encode_cursor(last))

    async def list_by_payload_field(
        self, field: str, value: str, *, limit: int, cursor: str | None = None
    ) -> SagaPage:
        column = _PAYLOAD_COLUMNS.get(field)
        if column is None:
            raise ValueError(f"payload field {field!r} has no index: not searchable")
        sql = f"SELECT seq, {COLUMNS} FROM sagas WHERE {column} = $1"
        args: list[object] = [value]
        if cursor is not None:
            args.append(decode_cursor(cursor))
            sql += " AND seq < $2"
        args.append(limit + 1)
        sql += f" ORDER BY seq DESC LIMIT ${len(args)}"
        return await self._read(lambda conn: self._page(conn, sql, args, limit))

    async def count_per_minute(self, *, since_ms: int) -> list[MinuteCounts]:
        async def q(conn: Conn) -> list[MinuteCounts]:
            rows = await conn.fetch(
                "SELECT minute, sum(created) AS c, sum(completed) AS d, sum(compensated) AS x "
                "FROM saga_minutes WHERE minute >= $1 GROUP BY minute "
                "HAVING sum(created) + sum(completed) + sum(compensated) > 0 ORDER BY minute",
                since_ms // MINUTE_MS,
            )
            return [
                MinuteCounts(int(r["minute"]) * MINUTE_MS, int(r["c"]), int(r["d"]), int(r["x"]))
                for r in rows
            ]

        return await self._read(q)

    async def count_claimable(self, *, now_ms: int) -> int:
        async def q(conn: Conn) -> int:
            value = await conn.fetchval(
                f"SELECT count(*) FROM sagas WHERE status IN ({ACTIVE}) "
                f"AND lease_expires_ms < least($1::bigint, {NOW_MS})",
                now_ms,
            )
            return int(value)

        return await self._read(q)

    async def oldest_unfinished_ms(self) -> int | None:
        async def q(conn: Conn) -> int | None:
            value = await conn.fetchval(
                f"SELECT min(created_ms) FROM sagas WHERE status IN ({ACTIVE})"
            )
            return None if value is None else int(value)

        return await self._read(q)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        async def q(conn: Conn) -> dict[SagaStatus, int]:
            rows = await conn.fetch("SELECT status, sum(n) AS n FROM saga_counts GROUP BY status")
            counts = dict.fromkeys(SagaStatus, 0)
            for r in rows:
                counts[SagaStatus(r["status"])] = int(r["n"])
            return counts

        return await self._read(q)

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
        return await self._commits.create(
            new, owner=owner, lease_expires_ms=lease_expires_ms, now_ms=now_ms, first=first
        )

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
        await self._commits.append(
            saga_id, epoch, transitions, status=status, reason=reason, now_ms=now_ms
        )

    async def claim(
        self, owner: str, *, limit: int, now_ms: int, lease_expires_ms: int
    ) -> list[Takeover]:
        async def unit(conn: Conn) -> list[Takeover]:
            rows = await conn.fetch(CLAIM, owner, now_ms, limit, lease_expires_ms)
            if not rows:
                return []
            logs: dict[int, list[Transition]] = {int(r["seq"]): [] for r in rows}
            for t in await conn.fetch(
                f"SELECT saga_seq, {TRANSITION_COLUMNS} FROM transitions "
                "WHERE saga_seq = ANY($1::bigint[]) ORDER BY saga_seq, n",
                list(logs),
            ):
                logs[int(t["saga_seq"])].append(transition(t))
            return [Takeover(record(r), tuple(logs[int(r["seq"])])) for r in rows]

        return await self._write(unit)

    async def change(self, saga_id: str, fn: ChangeFn, *, now_ms: int, actor: str) -> SagaRecord:
        async def unit(conn: Conn) -> SagaRecord:
            row = await conn.fetchrow(
                f"SELECT seq, last_n, {COLUMNS} FROM sagas WHERE id = $1 FOR UPDATE", saga_id
            )
            if row is None:
                raise SagaNotFound(f"no saga {saga_id}", saga_id=saga_id)
            seq, last_n = int(row["seq"]), int(row["last_n"])
            change: Change = fn(record(row), await _transitions_of(conn, seq))
            last = await _insert_transitions(conn, seq, last_n, change.transitions, now_ms)
            rec = await conn.fetchrow(
                "UPDATE sagas SET owner = NULL, lease_expires_ms = 0, epoch = epoch + 1, "
                "status = $1, reason = $2, last_n = $3, updated_ms = $4 "
                f"WHERE seq = $5 RETURNING {COLUMNS}",
                change.status.value,
                change.reason,
                last,
                now_ms,
                seq,
            )
            assert rec is not None
            return record(rec)

        return await self._write(unit)

    async def prune_history(
        self, *, finished_before_ms: int, limit: int, cursor: str | None, dry_run: bool = False
    ) -> Pruned:
        after = 0 if cursor is None else decode_cursor(cursor)

        async def unit(conn: Conn) -> Pruned:
            # Up to `limit` sagas in creation order, whatever their status, so that one
            # batch (one transaction) costs a bounded time however the log looks.
            rows = await conn.fetch(
                "SELECT seq, last_n, status, created_ms, updated_ms, "
                "(SELECT phase FROM transitions t WHERE t.saga_seq = s.seq AND t.n = s.last_n) "
                "AS last FROM sagas s WHERE seq > $1 ORDER BY seq LIMIT $2",
                after,
                limit,
            )
            batch = PruneBatch(finished_before_ms)
            for r in rows:
                last_phase = None if r["last"] is None else Phase(r["last"])
                fields = (int(r["created_ms"]), SagaStatus(r["status"]), int(r["updated_ms"]))
                if not batch.wants(*fields, last_phase):
                    continue
                args = (int(r["seq"]), int(r["last_n"]))
                if dry_run:
                    deleted = int(
                        await conn.fetchval(
                            "SELECT count(*) FROM transitions WHERE saga_seq = $1 AND n < $2",
                            *args,
                        )
                    )
                else:
                    deleted = _count(
                        await conn.execute(
                            "DELETE FROM transitions WHERE saga_seq = $1 AND n < $2", *args
                        )
                    )
                batch.pruned(deleted)
            last = int(rows[-1]["seq"]) if rows else after
            return batch.result(len(rows), limit, encode_cursor(last))

        return await (self._read(unit) if dry_run else self._write(unit))

    async def renew(self, owner: str, *, lease_expires_ms: int) -> int:
        async def unit(conn: Conn) -> int:
            return _count(
                await conn.execute(
                    f"UPDATE sagas SET lease_expires_ms = $1 WHERE owner = $2 "
                    f"AND status IN ({ACTIVE})",
                    lease_expires_ms,
                    owner,
                )
            )

        return await self._write(unit)

    async def release(self, owner: str, saga_ids: Sequence[str] | None = None) -> int:
        async def unit(conn: Conn) -> int:
            sql = (
                "UPDATE sagas SET owner = NULL, lease_expires_ms = 0 WHERE owner = $1 "
                f"AND status IN ({ACTIVE})"
            )
            if saga_ids is None:
                return _count(await conn.execute(sql, owner))
            sql += " AND id = ANY($2::text[])"
            return _count(await conn.execute(sql, owner, list(saga_ids)))

        return await self._write(unit)

    async def close(self) -> None:
        """Finish what is queued, then close the pool."""
        self._clock_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._clock_task
        await self._commits.close()
        await self._pool.close()
