"""What every servicer method goes through to reach its ledger: the caller's epoch, fault
injection around the call, and the ledger store (one write unit, or one read snapshot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import apsw
import grpc.aio

from services.common.faults import FaultInjector, Metadata
from services.common.fencing import epoch_from_metadata
from services.common.store import LedgerStore

__all__ = ["Edge", "metadata_of"]

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def metadata_of(context: Context) -> Metadata:
    # grpc's stubs type this as a Mapping, but grpc.aio gives a tuple of (key, value) pairs.
    return cast(Metadata, tuple(context.invocation_metadata() or ()))


class Edge:
    """The servicers' road to the ledger; one per service."""

    def __init__(self, store: LedgerStore, faults: FaultInjector) -> None:
        self.store = store
        self.faults = faults

    @staticmethod
    def epoch(context: Context) -> int:
        """The caller's fencing epoch (`x-saga-epoch`; 0 when absent)."""
        return epoch_from_metadata(metadata_of(context))

    async def write(self, method: str, context: Context, unit: Callable[[apsw.Connection], T]) -> T:
        """Run `unit` as one durable write unit, with the method's faults around it."""
        metadata = metadata_of(context)
        await self.faults.before(method, metadata, mutating=True)
        result = await self.store.write(unit)
        self.faults.after_commit(method, metadata, mutating=True)
        return result

    async def read(self, method: str, context: Context, query: Callable[[apsw.Connection], T]) -> T:
        """Run `query` on one consistent snapshot of the ledger."""
        metadata = metadata_of(context)
        await self.faults.before(method, metadata, mutating=False)
        result = await self.store.read(query)
        self.faults.after_commit(method, metadata, mutating=False)
        return result
