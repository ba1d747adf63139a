"""The Redis adapter of the idempotency answer cache (engine/idempotency.py).

A failure is logged and counted, never raised: the request goes to the saga log, and
after a failure Redis is skipped for a short while so that a dead server costs no
latency. SET NX keeps the first answer; nobody overwrites a key with another saga.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.idempotency import CachedAnswer

__all__ = ["RedisCache"]

log = logging.getLogger(__name__)

# What a call to Redis may raise when Redis or the link to it fails. RuntimeError: uvloop's
# transports raise it for a write to a connection the peer has already closed (asyncio's
# own raise ConnectionResetError, an OSError), so under uvloop a refused or reset link to
# Redis would otherwise escape as a 500.
_FAILURES = (RedisError, OSError, TimeoutError, RuntimeError)


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: int = 24 * 3600,
        timeout_s: float = 0.1,
        cooldown_s: float = 2.0,
        namespace: str = "saga:idem:",
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._namespace = namespace
        self._on_error = on_error
        self._skip_until = 0.0

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self._cooldown_s
        log.warning("redis %s failed (%s); using the saga log alone for %.0fs", op, exc,
                    self._cooldown_s)  # fmt: skip
        if self._on_error is not None:
            self._on_error(op)

    async def get(self, key: str) -> CachedAnswer | None:
        if not self._usable():
            return None
        try:
            raw = await self._redis.get(self._namespace + key)
        except _FAILURES as exc:
            self._failed("get", exc)
            return None
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        saga_id, _, digest = text.partition(" ")
        return CachedAnswer(saga_id, digest) if saga_id and digest else None

    async def put(self, key: str, answer: CachedAnswer) -> None:
        if not self._usable():
            return
        try:
            # NX: the first answer stays; nobody overwrites a key with another saga.
            await self._redis.set(
                self._namespace + key, f"{answer.saga_id} {answer.digest}", nx=True,
                ex=self._ttl_s,
            )  # fmt: skip
        except _FAILURES as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self._redis.aclose()
