"""Prometheus metrics for the saga engine: the adapter of `engine.hooks.Hooks`, the log
writer's commit statistics, and gauges sampled from the log. Each process owns one
CollectorRegistry (no global state) and exposes it on its own /metrics.

Labels are definition names, step names, kinds and outcomes, never ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.core import SagaStatus
from engine.labels import Children
from engine.saga_log import SagaLog, SagaRecord
from engine.sqlite import BatchStats

__all__ = ["SagaMetrics"]

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_OUTCOME = {
    SagaStatus.COMPLETED: "completed",
    SagaStatus.COMPENSATED: "compensated",
    SagaStatus.NEEDS_ATTENTION: "parked",
}


class SagaMetrics:
    """Implements `engine.hooks.Hooks` (metrics only; spans come from engine/tracing.py).

    `recovery=True` also counts finished sagas as recoveries (the daemon's view)."""

    def __init__(self, registry: CollectorRegistry, *, recovery: bool = False) -> None:
        self.registry = registry
        self._recovery = recovery
        self.started = Counter(
            "saga_started", "Sagas made durable", ["definition"], registry=registry
        )
        self.finished = Counter(
            "saga_finished",
            "Sagas that reached an end, by outcome (parked included)",
            ["definition", "outcome"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "saga_step_duration_seconds",
            "One call to a participant, by outcome",
            ["definition", "step", "kind", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=registry,
        )
        self.step_retries = Counter(
            "saga_step_retries",
            "Attempts that failed transiently (and will be retried)",
            ["definition", "step", "kind"],
            registry=registry,
        )
        self.compensations = Counter(
            "saga_compensations",
            "Compensations completed, by step",
            ["definition", "step"],
            registry=registry,
        )
        self.inflight_sagas = Gauge(
            "saga_inflight", "Sagas this process is driving now", registry=registry
        )
        self.scans = Counter("saga_claim_scans", "Scans for claimable sagas", registry=registry)
        self.claims = Counter(
            "saga_claimed", "Sagas claimed (queued, or left by a dead owner)", registry=registry
        )
        self.recovered = Counter(
            "saga_recovered",
            "Sagas a recovery process drove to an end, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "saga_log_commit_seconds",
            "One group commit of the saga log (fsync included)",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.writes_per_commit = Histogram(
            "saga_log_writes_per_commit",
            "Log writes (appends, creates, claims) per commit",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.oldest_age = Gauge(
            "saga_oldest_unfinished_age_seconds",
            "Age of the oldest RUNNING/COMPENSATING saga",
            registry=registry,
        )
        self.by_status = Gauge(
            "saga_sagas",
            "Sagas in the log by status (NEEDS_ATTENTION = parked)",
            ["status"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "saga_queue_depth",
            "Unfinished sagas no live owner holds (waiting to be claimed)",
            registry=registry,
        )

        # The daemon's history retention (recovery/retention.py); only the daemon prunes.
        self.history_pruned: Counter | None = None
        if recovery:
            for outcome in _OUTCOME.values():
                self.recovered.labels(outcome)
            self.history_pruned = Counter(
                "saga_history_pruned_sagas",
                "Finished sagas whose step history the retention pruned",
                registry=registry,
            )

        # The hooks' lookups (engine.hooks.Hooks runs them for every saga and step).
        self._started = Children(self.started)
        self._finished = Children(self.finished)
        self._recovered = Children(self.recovered)
        self._step_seconds = Children(self.step_seconds)
        self._step_retries = Children(self.step_retries)
        self._compensations = Children(self.compensations)

    def sagas_pruned(self, n: int) -> None:
        if self.history_pruned is not None:
            self.history_pruned.inc(n)

    def declare(self, definition: str) -> None:
        """Publish a definition's series at 0 before its first saga, so that a dashboard's
        rate() and a "from 0 to 1" check see them from the process's start."""
        self.started.labels(definition)
        for outcome in _OUTCOME.values():
            self.finished.labels(definition, outcome)

    # ---- engine.hooks.Hooks ------------------------------------------------------------

    def saga_started(self, definition: str) -> None:
        self._started(definition).inc()

    def saga_finished(self, definition: str, status: SagaStatus) -> None:
        outcome = _OUTCOME.get(status, status.value.lower())
        self._finished(definition, outcome).inc()
        if self._recovery:
            self._recovered(outcome).inc()

    @contextlib.contextmanager
    def attempt(
        self, record: SagaRecord, step: str, compensation: bool, attempt: int
    ) -> Iterator[str | None]:
        yield record.trace_id

    def attempt_finished(
        self, definition: str, step: str, compensation: bool, outcome: str, seconds: float
    ) -> None:
        kind = "compensation" if compensation else "action"
        self._step_seconds(definition, step, kind, outcome).observe(seconds)
        if outcome in ("error", "timeout"):
            self._step_retries(definition, step, kind).inc()
        elif compensation and outcome == "done":
            self._compensations(definition, step).inc()

    def claimed(self, count: int) -> None:
        self.scans.inc()
        self.claims.inc(count)

    def inflight(self, count: int) -> None:
        self.inflight_sagas.set(count)

    # ---- the log -------------------------------------------------------------------------

    def on_batch(self, stats: BatchStats) -> None:
        """Pass as `SqliteSagaLog.open(..., on_batch=metrics.on_batch)`."""
        self.commit_seconds.observe(stats.seconds)
        self.writes_per_commit.observe(stats.units)

    async def sample(self, log: SagaLog, now_ms: int) -> None:
        """Refresh the gauges read from the log (call every few seconds, not per request)."""
        oldest = await log.oldest_unfinished_ms()
        self.oldest_age.set(0 if oldest is None else max(0.0, (now_ms - oldest) / 1000))
        for status, count in (await log.count_by_status()).items():
            self.by_status.labels(status.value).set(count)
        self.queue_depth.set(await log.count_claimable(now_ms=now_ms))
