"""Durable idempotency: one key, one saga, whatever Redis does.

The saga log's unique idempotency key is the source of truth: `Runner.start_saga` with a
key that exists returns that saga and starts nothing. Redis (optional) is only a fast path
in front of it, an answer cache that saves the log write on a replay:

- a hit is trusted only after the log confirms it (the saga exists, carries this key and
  this payload); a stale, foreign or flushed cache therefore costs a miss, never a
  second saga or a wrong answer;
- a cache failure is logged and counted by the adapter, never raised (engine/redis_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.runner import Runner
from engine.saga_log import IdempotencyKeyReused, NewSaga, SagaLog, SagaRecord, replay

__all__ = [
    "CachedAnswer",
    "IdempotencyCache",
    "NullCache",
    "StartOutcome",
    "recognise",
    "start_once",
]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    saga_id: str
    digest: str


class IdempotencyCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer) -> None: ...

    async def close(self) -> None: ...


class NullCache:
    """No Redis: every request asks the log."""

    async def get(self, key: str) -> CachedAnswer | None:
        return None

    async def put(self, key: str, answer: CachedAnswer) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class StartOutcome:
    record: SagaRecord
    replayed: bool
    layer: str | None  # which layer recognised a replay: "redis" or "log"


async def start_once(runner: Runner, cache: IdempotencyCache, new: NewSaga) -> StartOutcome:
    """Start `new` unless its idempotency key already names a saga; never two sagas."""
    key = new.idempotency_key
    if key is not None:
        hit = await cache.get(key)
        if hit is not None:
            if hit.digest != new.digest:
                rec = await runner.log.get(hit.saga_id)
                if rec is not None and rec.idempotency_key == key:
                    raise IdempotencyKeyReused(
                        "this idempotency key was used with a different request",
                        saga_id=rec.id,
                    )
            else:
                rec = await runner.log.get(hit.saga_id)
                confirmed = (
                    rec is not None
                    and rec.idempotency_key == key
                    and rec.payload_digest == hit.digest
                )
                if confirmed and rec is not None:
                    return StartOutcome(rec, replayed=True, layer="redis")
    result = await runner.start_saga(new)
    if key is not None:
        await cache.put(key, CachedAnswer(result.record.id, result.record.payload_digest))
    return StartOutcome(
        result.record, replayed=not result.created, layer=None if result.created else "log"
    )


async def recognise(log: SagaLog, new: NewSaga) -> StartOutcome | None:
    """`new` as a replay, found by a read alone: for when no saga can be started (the
    queue is full, the log cannot be written) but one with this key may exist, so that a
    client retrying a lost answer gets its order rather than the refusal. None when the key
    is absent or new; IdempotencyKeyReused when it named another request."""
    if new.idempotency_key is None:
        return None
    existing = await log.get_by_key(new.idempotency_key)
    if existing is None:
        return None
    return StartOutcome(replay(existing, new).record, replayed=True, layer="log")
