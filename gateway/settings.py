"""The gateway's settings: one frozen object built from the environment at the entry point
(`GatewaySettings.from_env`), then passed down. Nothing else reads os.environ.

The contract's variables (docs/reference.md) and the gateway's own, each with a sane default:

| variable | meaning | default |
|---|---|---|
| `HTTP_ADDR` | where the HTTP API listens | `127.0.0.1:8080` |
| `SAGA_DATA_DIR` | folder of the SQLite files | `./var` |
| `SAGA_LOG_DB_PATH` | the saga log | `$SAGA_DATA_DIR/saga.db` |
| `REDIS_URL` | idempotency fast path; unset = the log alone | unset |
| `SAGA_REDIS_TIMEOUT_MS` | one Redis call's budget; past it the log answers alone | 100 |
| `SAGA_LEASE_S` | lease on a saga without a heartbeat | 10 |
| `*_SERVICE_ADDR` | the services (an address, a list, `dns:`) | 127.0.0.1:9090/9091/9092 |
| `SAGA_GRPC_TLS_*` | mutual TLS to the services (engine/net.py) | unset: plaintext |
| `SAGA_ADMIN_TOKEN` | bearer token of the admin routes; unset = closed | unset |
| `SAGA_SQLITE_SYNCHRONOUS` | FULL (survives power loss) or NORMAL (survives a crash) | FULL |
| `SAGA_SQLITE_BUSY_TIMEOUT_MS` | how long a log write waits for a lock held elsewhere | 5000 |
| `SAGA_RUNNER_CAPACITY` | sagas driven at once; more wait in the log | 256 |
| `SAGA_MAX_QUEUE` | claimable sagas waiting past which POST /orders is 503 | 10000 |
| `SAGA_DRAIN_S` | on SIGTERM, how long calls in flight may finish | 10 |
| `SAGA_MAX_BODY_BYTES` | largest request body (413 beyond) | 65536 |
| `SAGA_READY_TIMEOUT_S` | per-service health check timeout of /readyz | 0.5 |
| `SAGA_UI_TRACE_URL` | the explorer's link to a saga's trace, with `{trace_id}` in it | unset |
| `SAGA_LOG_BACKEND` | `sqlite`; `memory`: tests and benchmarks only (`SAGA_ENV=test`) | sqlite |
| `SAGA_GATEWAY_WORKERS` | worker processes serving the one HTTP port, each with its runner | 1 |
| `SAGA_STEP_MAX_ATTEMPTS` | attempts before a step before the pivot gives up (cancel) | 6 |
| `SAGA_PARK_AFTER` | attempts of the pivot, later steps or a compensation before parking | 40 |
| `SAGA_INITIAL_BACKOFF_S`, `SAGA_MAX_BACKOFF_S` | retry backoff (exponential, jitter) | 0.05, 2 |
| `SAGA_STEP_TIMEOUT_S` | timeout of one call to a participant | 5 |
| `SAGA_MAX_STALLED_CLAIMS` | claims without progress before a saga is parked | 16 |

The saga log's, the lease, the drain, the services' addresses and the last five (which
shape the order saga) are read by `orders.runtime.DriveSettings`, as the recovery daemon
reads them.

`SAGA_LOG_BACKEND=memory` keeps the saga log in the gateway's memory: nothing is durable,
every acknowledged order is lost when the process ends. It exists so that a benchmark can
measure the cost of durability on the real stack (`python -m bench e2e`), and it is
refused unless `SAGA_ENV=test`: a production gateway must never lose durability silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from redis.connection import parse_url

from engine.config import Address, SettingsError, env_addr, env_float, env_int
from orders.runtime import DriveSettings

__all__ = ["MAX_WORKERS", "TRACE_ID_SLOT", "GatewaySettings"]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    http_addr: Address = ("127.0.0.1", 8080)
    drive: DriveSettings = field(default_factory=DriveSettings)
    redis_url: str | None = None
    redis_timeout_s: float = 0.1
    # Never printed: repr=False keeps it out of logs and tracebacks.
    admin_token: str | None = field(default=None, repr=False)
    runner_capacity: int = 256
    max_queue: int = 10_000
    max_body_bytes: int = 64 * 1024
    ready_timeout_s: float = 0.5
    # The saga explorer's link to a trace: a URL with `{trace_id}` where the id goes (a
    # Grafana Explore link, say); None: no link.
    ui_trace_url: str | None = None
    # Processes serving HTTP_ADDR, each with its own runner over the shared saga log
    # (gateway/workers.py); 1: this process serves alone.
    workers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        settings = cls(
            http_addr=env_addr(env, "HTTP_ADDR", "127.0.0.1:8080"),
            drive=DriveSettings.from_env(env),
            redis_url=_redis_url(env),
            redis_timeout_s=env_int(env, "SAGA_REDIS_TIMEOUT_MS", 100, minimum=1) / 1000,
            admin_token=env.get("SAGA_ADMIN_TOKEN") or None,
            runner_capacity=env_int(env, "SAGA_RUNNER_CAPACITY", 256, minimum=1),
            max_queue=env_int(env, "SAGA_MAX_QUEUE", 10_000, minimum=0),
            max_body_bytes=env_int(env, "SAGA_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            ready_timeout_s=env_float(env, "SAGA_READY_TIMEOUT_S", 0.5, minimum=0.01),
            ui_trace_url=_trace_url(env),
            workers=env_int(env, "SAGA_GATEWAY_WORKERS", 1, minimum=1),
        )
        if settings.workers > MAX_WORKERS:
            raise SettingsError(
                f"SAGA_GATEWAY_WORKERS={settings.workers}: expected at most {MAX_WORKERS} "
                "(about one per core)"
            )
        if settings.workers > 1 and not settings.drive.log.durable:
            raise SettingsError(
                f"SAGA_GATEWAY_WORKERS={settings.workers}: the in-memory saga log "
                "(SAGA_LOG_BACKEND=memory) lives in one process; use 1 worker"
            )
        return settings


TRACE_ID_SLOT: Final = "{trace_id}"
MAX_WORKERS: Final = 64


def _trace_url(env: Mapping[str, str]) -> str | None:
    """SAGA_UI_TRACE_URL: an http(s) URL naming `{trace_id}` (once or more), so that the
    explorer's link can only lead to a web page with the trace id in it."""
    raw = (env.get("SAGA_UI_TRACE_URL") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw.replace(TRACE_ID_SLOT, "0"))
    if parts.scheme not in ("http", "https") or not parts.netloc or TRACE_ID_SLOT not in raw:
        raise SettingsError(
            f"SAGA_UI_TRACE_URL={raw!r}: expected an http(s) URL with {TRACE_ID_SLOT} in it, "
            "e.g. http://localhost:3000/explore?left=...{trace_id}..."
        )
    return raw


def _redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL checked by redis-py's own parser now, not when the first request builds a
    client. The value is not echoed: it may hold a password."""
    raw = (env.get("REDIS_URL") or "").strip()
    if not raw:
        return None
    try:
        parse_url(raw)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except ValueError as exc:
        raise SettingsError(f"REDIS_URL: {exc}, e.g. redis://127.0.0.1:6379/0") from None
    return raw
