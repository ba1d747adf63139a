"""What the three participant services share: the server bootstrap, the edge to the
ledger (epoch, faults, store), validation, paging, and the error-to-status table."""

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
    "LedgerOpenError",
    "LedgerStore",
    "MutatingCall",
    "NotFound",
    "ServiceError",
    "epoch_from_metadata",
    "fence",
    "once",
    "parse_faults",
    "rpc",
    "status_for",
]
