"""What the three participant services share: the server bootstrap, the edge to the
ledger (epoch, faults), the ledger stores (a SQLite file, a PostgreSQL schema) and what
every ledger port is to the server, validation, paging, and the error-to-status table."""

from services.common.backend import Ledger, PgBacked, SqliteBacked
from services.common.edge import Edge
from services.common.errors import (
    ConflictingRepeat,
    EpochFenced,
    InjectedFault,
    InvalidArgument,
    LedgerOpenError,
    NotFound,
    ServiceError,
)
from services.common.faults import FaultInjector, FaultPlan, parse_faults
from services.common.fencing import EPOCH_KEY, epoch_from_metadata, fence
from services.common.journal import Answer, MutatingCall, once
from services.common.pgstore import PgLedgerStore
from services.common.status import STATUS_BY_ERROR, rpc, status_for
from services.common.store import LedgerStore

__all__ = [
    "EPOCH_KEY",
    "STATUS_BY_ERROR",
    "Answer",
    "ConflictingRepeat",
    "Edge",
    "EpochFenced",
    "FaultInjector",
    "FaultPlan",
    "InjectedFault",
    "InvalidArgument",
    "Ledger",
    "LedgerOpenError",
    "LedgerStore",
    "MutatingCall",
    "NotFound",
    "PgBacked",
    "PgLedgerStore",
    "ServiceError",
    "SqliteBacked",
    "epoch_from_metadata",
    "fence",
    "once",
    "parse_faults",
    "rpc",
    "status_for",
]
