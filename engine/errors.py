"""The engine's error root. Errors carry data: a code, the ids involved, retryability.

Driver errors (apsw, grpc, redis) are translated into these at the adapter that meets
them; the edges (HTTP, gRPC, CLI) map them to status codes in one table each.
"""

from __future__ import annotations

from enum import StrEnum


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    code: str = "engine_error"
    retryable: bool = False

    def __init__(self, message: str, *, saga_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.saga_id = saga_id


class StorageFault(StrEnum):
    """Why the storage (a SQLite file, a PostgreSQL server) could not be used; decides the
    retry and the user's message."""

    BUSY = "busy"  # locked by another writer past the busy timeout
    FULL = "full"  # disk or quota full
    READONLY = "readonly"  # file, folder or mount not writable
    CORRUPT = "corrupt"  # not a database, or damaged
    CANTOPEN = "cantopen"  # missing folder, permissions
    IO = "io"  # any other I/O failure
    UNAVAILABLE = "unavailable"  # a database server cannot be reached or is failing over


class StorageError(EngineError):
    """The saga log's or a ledger's storage cannot be read or written; nothing was
    committed by the failing call."""

    code = "storage_unavailable"

    def __init__(self, fault: StorageFault, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.fault = fault
        self.path = path
        self.retryable = fault in (
            StorageFault.BUSY,
            StorageFault.FULL,
            StorageFault.IO,
            StorageFault.UNAVAILABLE,
        )


def unreachable(exc: BaseException) -> bool:
    """A database server that cannot be reached (down, restarting, failing over): an
    outage, told once by whoever owns the connection (engine/pg/outage.py), so the code
    that meets it on every call logs it below WARNING."""
    return isinstance(exc, StorageError) and exc.fault is StorageFault.UNAVAILABLE


class CommitOutcomeUnknown(EngineError):
    """A COMMIT failed after it may have written: its transaction may be durable or not,
    and may turn out either way after a restart (the frames reached the page cache, or
    part of them). Not a StorageError on purpose: whatever treats a StorageError as
    "nothing happened" must not catch this. The writer that raised it takes no more work
    (every later call fails with this too); a server process then ends with `exit_code`,
    so that its next start reads what is really durable (docs/architecture.md, A failed
    COMMIT is an unknown outcome). The caller retries with the same idempotency key."""

    code = "outcome_unknown"
    retryable = True
    exit_code = 74  # EX_IOERR: not 2, which `saga up` reads as "cannot start"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class MigrationError(EngineError):
    """The file's schema is newer than this program knows, or a migration failed."""

    code = "migration_failed"


class SchemaTooNew(MigrationError):
    """A database was migrated by a later program than this one: refused, not misread."""

    code = "schema_too_new"

    def __init__(self, message: str, *, version: int, known: int) -> None:
        super().__init__(message)
        self.version = version
        self.known = known


class StaleEpoch(EngineError):
    """Another owner claimed the saga (the log or a participant said so): the holder of the
    old epoch must stop touching it at once."""

    code = "stale_epoch"


class ListenError(EngineError):
    """A server cannot listen on its address (in use, not local, no permission)."""

    code = "listen_failed"


class TransientStepError(EngineError):
    """A step's call failed in a way that may succeed if retried (unavailable, timeout).

    Its outcome is unknown: the participant may have applied it before the failure."""

    code = "transient"
    retryable = True


class Overloaded(EngineError):
    """The runner has no slot for a new saga and too many already wait in the log for one:
    nothing was created. Retry shortly."""

    code = "overloaded"
    retryable = True

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} sagas are waiting to be processed; retry shortly")
        self.waiting = waiting
