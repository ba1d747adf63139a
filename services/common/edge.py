"""What every servicer method goes through to reach its ledger: the caller's epoch, and
fault injection around the call (one write unit, or one read snapshot, of the ledger)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc.aio

from services.common.faults import FaultInjector, Metadata
from services.common.fencing import epoch_from_metadata

__all__ = ["Edge", "metadata_of"]

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def metadata_of(context: Context) -> Metadata:
    # grpc's stubs type this as a Mapping, but grpc.aio gives a tuple of (key, value) pairs.
    return cast(Metadata, tuple(context.invocation_metadata() or ()))


class Edge:
    """The servicers' road to the ledger; one per service."""

    def __init__(self, faults: FaultInjector) -> None:
        self.faults = faults

    @staticmethod
    def epoch(context: Context) -> int:
        """The caller's fencing epoch (`x-saga-epoch`; 0 when absent)."""
        return epoch_from_metadata(metadata_of(context))

    async def write(self, method: str, context: Context, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` (one durable write unit of the ledger), with the method's faults."""
        metadata = metadata_of(context)
        await self.faults.before(method, metadata, mutating=True)
        result = await call()
        self.faults.after_commit(method, metadata, mutating=True)
        return result

    async def read(self, method: str, context: Context, query: Callable[[], Awaitable[T]]) -> T:
        """Run `query` (one consistent snapshot of the ledger), with the method's faults."""
        metadata = metadata_of(context)
        await self.faults.before(method, metadata, mutating=False)
        result = await query()
        self.faults.after_commit(method, metadata, mutating=False)
        return result
