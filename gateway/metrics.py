"""The gateway's Prometheus metrics: one registry per app (never the global one, so that
two apps in one test process, or a restarted app, never share or clash on collectors).

`GatewayMetrics` owns the registry. The saga engine's metrics are `engine.metrics.
SagaMetrics` on the same registry (`self.saga`, also the runner's `engine.hooks.Hooks`),
so the gateway and the recovery daemon publish the same saga series; this module adds
the HTTP edge's: requests by route and status, orders created and refused, idempotency
replays by the layer that recognised them, cache failures. Labels are route templates,
layers and codes, never ids (STYLE 9).

To add a metric: create it in `__init__` on `self.registry` and give it a method here;
/metrics renders whatever the registry holds, after `sample` refreshes the gauges read
from the log.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.labels import Children
from engine.metrics import SagaMetrics
from engine.saga_log import SagaLog

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Every metric of one gateway app, on its own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # The engine's: pass `self.saga` as the runner's hooks and its `on_batch` to the log.
        self.saga = SagaMetrics(r)
        self.http_requests = Counter(
            "saga_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "saga_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.orders_created = Counter(
            "saga_orders_created", "Orders made durable (a 201 that is not a replay)", registry=r
        )
        self.orders_refused = Counter(
            "saga_orders_refused",
            "POST /orders refused after validation, by error code (overloaded, unavailable, "
            "idempotency_key_reused)",
            ["code"],
            registry=r,
        )
        self.idempotency_hits = Counter(
            "saga_idempotency_hits",
            "Replays recognised by their idempotency key, by the layer that recognised them "
            "(redis: the fast path, confirmed by the log; log: the log's unique key)",
            ["layer"],
            registry=r,
        )
        for layer in ("redis", "log"):
            self.idempotency_hits.labels(layer)  # at 0 from the start
        self.cache_errors = Counter(
            "saga_idempotency_cache_errors",
            "Failed idempotency cache operations (the log answered instead)",
            ["op"],
            registry=r,
        )

        self._requests = Children(self.http_requests)
        self._seconds = Children(self.http_seconds)

    async def sample(self, log: SagaLog, now_ms: int) -> None:
        """Refresh the gauges read from the log (queue depth, sagas by status)."""
        await self.saga.sample(log, now_ms)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests(method, route, str(status)).inc()
        self._seconds(method, route).observe(seconds)

    def order_created(self) -> None:
        self.orders_created.inc()

    def order_refused(self, code: str) -> None:
        self.orders_refused.labels(code).inc()

    def idempotency_hit(self, layer: str) -> None:
        self.idempotency_hits.labels(layer).inc()

    def cache_error(self, op: str) -> None:
        """RedisCache's `on_error` callback."""
        self.cache_errors.labels(op).inc()
