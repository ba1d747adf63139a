"""The saga log's tables on PostgreSQL (schema `saga_log`) and the statements that write
them in batches. engine/pg_log.py runs them; the numbered migrations are applied by
engine/pg/migrate.py.

The tables mirror the SQLite log's (engine/sqlite_log.py): `seq` numbers sagas in creation
order (oldest-first claims, newest-first pages), times are integer milliseconds,
transitions are ordered by `n`, and `(saga, step, phase, attempt)` is unique so the same
fact can never be recorded twice. The counters the metrics and the explorer read are kept
by statement-level triggers, one upsert per statement however many rows it changed, and
spread over shards (by backend) so that concurrent transactions of several processes do
not queue on one hot row.
"""

from __future__ import annotations

from typing import Final

from engine.core import ACTIVE_STATUSES, Phase
from engine.saga_log import MINUTE_MS

__all__ = [
    "APPEND",
    "CLAIM",
    "COLUMNS",
    "CREATE",
    "MIGRATIONS",
    "NOW_MS",
    "SCHEMA",
    "TRANSITION_COLUMNS",
]

SCHEMA: Final = "saga_log"
ACTIVE: Final = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)
SHARDS: Final = 16

MIGRATIONS: Final = (
    f"""
    CREATE TABLE sagas (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        definition text NOT NULL,
        status text NOT NULL CHECK (status IN
            ('RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'NEEDS_ATTENTION')),
        payload bytea NOT NULL,
        payload_digest text NOT NULL,
        idempotency_key text UNIQUE,
        owner text,
        lease_expires_ms bigint NOT NULL DEFAULT 0,  -- 0: unowned, claimable now
        epoch bigint NOT NULL DEFAULT 1 CHECK (epoch >= 1),
        trace_id text,
        reason text,
        last_n integer NOT NULL DEFAULT 0,  -- sequence number of the latest transition
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL
    );
    CREATE INDEX sagas_claimable ON sagas (seq) WHERE status IN ({ACTIVE});
    CREATE INDEX sagas_owner ON sagas (owner) WHERE owner IS NOT NULL;
    CREATE INDEX sagas_status ON sagas (status, seq);
    CREATE INDEX sagas_created ON sagas (created_ms);
    -- The customer of an order's payload (INDEXED_PAYLOAD_FIELDS): NULL unless the
    -- payload is a JSON object that has it. Queries spell the expression the same way.
    CREATE FUNCTION payload_field(payload bytea, field text) RETURNS text
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        DECLARE doc jsonb;
        BEGIN
            doc := convert_from(payload, 'UTF8')::jsonb;
            IF jsonb_typeof(doc) <> 'object' THEN RETURN NULL; END IF;
            RETURN doc ->> field;
        EXCEPTION WHEN others THEN RETURN NULL;
        END $$;
    CREATE INDEX sagas_customer ON sagas (payload_field(payload, 'customer_id'));
    CREATE TABLE transitions (
        saga_seq bigint NOT NULL REFERENCES sagas (seq),
        n integer NOT NULL,
        step text NOT NULL,
        phase text NOT NULL,
        attempt integer NOT NULL,
        error text,
        trace_id text,
        at_ms bigint NOT NULL,
        PRIMARY KEY (saga_seq, n),
        UNIQUE (saga_seq, step, phase, attempt)
    );

    -- Sagas by status and per minute, kept by the statements that change them.
    CREATE TABLE saga_counts (
        status text NOT NULL, shard integer NOT NULL, n bigint NOT NULL,
        PRIMARY KEY (status, shard)
    );
    CREATE TABLE saga_minutes (
        minute bigint NOT NULL,  -- ms since the epoch / {MINUTE_MS}
        shard integer NOT NULL,
        created bigint NOT NULL DEFAULT 0,
        completed bigint NOT NULL DEFAULT 0,
        compensated bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (minute, shard)
    );
    CREATE FUNCTION count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE my_shard integer := pg_backend_pid() % {SHARDS};
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO saga_counts AS c (status, shard, n)
                    SELECT status, my_shard, count(*) FROM new_rows GROUP BY status
                    ORDER BY status
                ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
                INSERT INTO saga_minutes AS m (minute, shard, created)
                    SELECT created_ms / {MINUTE_MS}, my_shard, count(*) FROM new_rows
                    GROUP BY 1 ORDER BY 1
                ON CONFLICT (minute, shard) DO UPDATE SET created = m.created + excluded.created;
            ELSIF TG_OP = 'UPDATE' THEN
                INSERT INTO saga_counts AS c (status, shard, n)
                    SELECT status, my_shard, sum(d) FROM (
                        SELECT o.status, -1 AS d FROM old_rows o JOIN new_rows n USING (seq)
                        WHERE o.status <> n.status
                        UNION ALL
                        SELECT n.status, 1 FROM old_rows o JOIN new_rows n USING (seq)
                        WHERE o.status <> n.status) AS x
                    GROUP BY status ORDER BY status
                ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
                INSERT INTO saga_minutes AS m (minute, shard, completed, compensated)
                    SELECT n.updated_ms / {MINUTE_MS}, my_shard,
                           count(*) FILTER (WHERE n.status = 'COMPLETED'),
                           count(*) FILTER (WHERE n.status = 'COMPENSATED')
                    FROM old_rows o JOIN new_rows n USING (seq)
                    WHERE o.status <> n.status AND n.status IN ('COMPLETED', 'COMPENSATED')
                    GROUP BY 1 ORDER BY 1
                ON CONFLICT (minute, shard) DO UPDATE SET
                    completed = m.completed + excluded.completed,
                    compensated = m.compensated + excluded.compensated;
            ELSE
                INSERT INTO saga_counts AS c (status, shard, n)
                    SELECT status, my_shard, -count(*) FROM old_rows GROUP BY status
                    ORDER BY status
                ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
            END IF;
            RETURN NULL;
        END $$;
    CREATE TRIGGER sagas_counted_insert AFTER INSERT ON sagas
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_changes();
    CREATE TRIGGER sagas_counted_update AFTER UPDATE ON sagas
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION count_changes();
    CREATE TRIGGER sagas_counted_delete AFTER DELETE ON sagas
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_changes();
    """,
)

COLUMNS: Final = (
    "id, definition, status, payload, idempotency_key, payload_digest, owner, "
    "lease_expires_ms, epoch, trace_id, reason, created_ms, updated_ms"
)
TRANSITION_COLUMNS: Final = "n, step, phase, attempt, error, trace_id, at_ms"

# The server's clock in ms since the epoch: what lease expiry is finally judged by.
NOW_MS: Final = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

# Many sagas created in one statement. A key that exists (or repeats a key inserted by
# another transaction meanwhile) inserts nothing: the caller then reads that saga (a
# replay). Returns the ids inserted.
CREATE: Final = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[],
                         $6::text[], $7::bigint[], $8::text[], $9::bigint[])
        WITH ORDINALITY AS i(id, definition, payload, digest, key, owner, lease, trace_id,
                             now_ms, ord)
), made AS (
    INSERT INTO sagas (id, definition, status, payload, payload_digest, idempotency_key,
                       owner, lease_expires_ms, epoch, trace_id, last_n, created_ms,
                       updated_ms)
    SELECT id, definition, 'RUNNING', payload, digest, key, owner, lease, 1, trace_id, 1,
           now_ms, now_ms
    FROM input ORDER BY ord
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING seq, id, trace_id, created_ms
), logged AS (
    INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, trace_id, at_ms)
    SELECT seq, 1, '', '{Phase.CREATED.value}', 1, NULL, trace_id, created_ms FROM made
)
SELECT id FROM made
"""

# Many sagas' appends in one statement, each fenced on its own: a saga whose epoch moved
# on (or that does not exist) is left untouched and missing from what is returned, while
# the others are written. A transition without a trace of its own is filed under the
# saga's. Returns the ids written.
APPEND: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                         $6::integer[]) AS i(id, epoch, status, reason, now_ms, k)
), moved AS (
    UPDATE sagas s
    SET status = i.status, reason = i.reason, last_n = s.last_n + i.k, updated_ms = i.now_ms
    FROM input i
    WHERE s.id = i.id AND s.epoch = i.epoch
    RETURNING s.id, s.seq, s.last_n - i.k AS base, s.trace_id
), facts AS (
    SELECT * FROM unnest($7::text[], $8::integer[], $9::text[], $10::text[], $11::integer[],
                         $12::text[], $13::text[], $14::bigint[])
        AS t(id, j, step, phase, attempt, error, trace_id, at_ms)
), logged AS (
    INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, trace_id, at_ms)
    SELECT m.seq, m.base + f.j, f.step, f.phase, f.attempt, f.error,
           coalesce(f.trace_id, m.trace_id), f.at_ms
    FROM moved m JOIN facts f ON f.id = m.id
)
SELECT id FROM moved
"""

# A bounded batch of claimable sagas, oldest first, skipping rows another claimer holds:
# epoch bumped, a CLAIMED transition each (its attempt is the new epoch). Expiry is judged
# against the caller's reading ($2) but never later than the server's own clock, so a
# reading that runs ahead cannot take a live lease.
CLAIM: Final = f"""
WITH picked AS (
    SELECT seq FROM sagas
    WHERE status IN ({ACTIVE}) AND lease_expires_ms < least($2::bigint, {NOW_MS})
    ORDER BY seq LIMIT $3
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE sagas s
    SET owner = $1, epoch = s.epoch + 1, lease_expires_ms = $4, last_n = s.last_n + 1,
        updated_ms = $2
    FROM picked p WHERE s.seq = p.seq
    RETURNING s.seq, s.last_n, s.{COLUMNS.replace(", ", ", s.")}
), logged AS (
    INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, trace_id, at_ms)
    SELECT seq, last_n, '', '{Phase.CLAIMED.value}', epoch, 'by ' || $1, trace_id, $2 FROM taken
)
SELECT * FROM taken ORDER BY seq
"""
