"""The gateway's Prometheus metrics: one registry per app (never the global one, so that
two apps in one test process, or a restarted app, never share or clash on collectors).

`GatewayMetrics` owns the registry and is also the runner's `engine.hooks.Hooks`: the
runner reports sagas and step attempts to it, the HTTP middleware reports requests, the
idempotency road reports replays by layer. Labels are route templates, definitions, step
names and outcomes, never ids (STYLE 9).

To add a metric: create it in `__init__` on `self.registry` and give it a method here; the
/metrics route renders whatever the registry holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.core import SagaStatus
from engine.log import SagaRecord
from engine.sqlite import BatchStats

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Every metric of one gateway app, on its own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # ---- HTTP
        self.http_requests = Counter(
            "saga_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "saga_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # ---- orders and idempotency
        self.orders_created = Counter(
            "saga_orders_created_total", "Orders made durable (201, not a replay).", registry=r
        )
        self.idempotency_hits = Counter(
            "saga_idempotency_hits_total",
            "Replays recognised by an idempotency key, by the layer that recognised them "
            "(redis: the fast path, confirmed by the log; log: the log's unique key).",
            ["layer"],
            registry=r,
        )
        self.idempotency_cache_errors = Counter(
            "saga_idempotency_cache_errors_total",
            "Failed idempotency cache operations (the log answered instead).",
            ["op"],
            registry=r,
        )
        self.rejected = Counter(
            "saga_orders_rejected_total",
            "POST /orders refused before anything was written, by error code.",
            ["code"],
            registry=r,
        )
        # ---- the runner (engine.hooks.Hooks)
        self.sagas_started = Counter(
            "saga_sagas_started_total", "Sagas made durable.", ["definition"], registry=r
        )
        self.sagas_finished = Counter(
            "saga_sagas_finished_total",
            "Sagas that reached a terminal or parked status here.",
            ["definition", "status"],
            registry=r,
        )
        self.step_attempts = Counter(
            "saga_step_attempts_total",
            "Calls to participants, by step, direction and outcome "
            "(done, refused, error, timeout, fenced).",
            ["definition", "step", "compensation", "outcome"],
            registry=r,
        )
        self.step_duration = Histogram(
            "saga_step_duration_seconds",
            "Time of one call to a participant.",
            ["definition", "step", "compensation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.claims = Counter(
            "saga_claimed_total", "Sagas claimed from the log by this runner.", registry=r
        )
        self.inflight_sagas = Gauge(
            "saga_inflight", "Sagas this runner is driving now.", registry=r
        )
        # ---- the saga log
        self.log_batch_units = Histogram(
            "saga_log_commit_units",
            "Write units per group commit of the saga log.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.log_commit_seconds = Histogram(
            "saga_log_commit_seconds",
            "Time of one group commit of the saga log (fsync included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    # ---- HTTP and orders -----------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def order_created(self) -> None:
        self.orders_created.inc()

    def idempotency_hit(self, layer: str) -> None:
        self.idempotency_hits.labels(layer).inc()

    def cache_error(self, op: str) -> None:
        """RedisCache's `on_error` callback."""
        self.idempotency_cache_errors.labels(op).inc()

    def order_rejected(self, code: str) -> None:
        self.rejected.labels(code).inc()

    def log_batch(self, stats: BatchStats) -> None:
        """SqliteSagaLog's `on_batch` callback (runs on the writer thread: counters are
        thread-safe)."""
        self.log_batch_units.observe(stats.units)
        self.log_commit_seconds.observe(stats.seconds)

    # ---- engine.hooks.Hooks --------------------------------------------------------------

    def saga_started(self, definition: str) -> None:
        self.sagas_started.labels(definition).inc()

    def saga_finished(self, definition: str, status: SagaStatus) -> None:
        self.sagas_finished.labels(definition, status.value).inc()

    @contextlib.contextmanager
    def attempt(
        self, record: SagaRecord, step: str, compensation: bool, attempt: int
    ) -> Iterator[str | None]:
        # No span yet (the tracing work wraps this); the saga's trace id goes in the log.
        yield record.trace_id

    def attempt_finished(
        self, definition: str, step: str, compensation: bool, outcome: str, seconds: float
    ) -> None:
        comp = "true" if compensation else "false"
        self.step_attempts.labels(definition, step, comp, outcome).inc()
        self.step_duration.labels(definition, step, comp).observe(seconds)

    def claimed(self, count: int) -> None:
        self.claims.inc(count)

    def inflight(self, count: int) -> None:
        self.inflight_sagas.set(count)
