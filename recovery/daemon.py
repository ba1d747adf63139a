"""The recovery daemon: a separate process that finds unfinished sagas nobody drives
(their owner died, or a busy gateway queued them) and finishes them.

It is the engine's normal road, nothing special: the runner's pump claims claimable
sagas (oldest first, epoch bumped, a lease taken) at start-up and every
`SAGA_RECOVERY_INTERVAL_S`, and drives each with the same definitions and the same
write-ahead rules as the gateway. Two daemons share the work through leases; killing one
mid-recovery is just another crash that the other (or its restart) recovers from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry, start_http_server

from engine.config import format_addr
from engine.errors import CommitOutcomeUnknown, EngineError
from engine.metrics import SagaMetrics
from engine.sqlite_log import SqliteSagaLog
from orders.runtime import order_runtime
from recovery.retention import Retention
from recovery.settings import RecoverySettings

__all__ = ["serve"]

log = logging.getLogger("saga.recovery")


async def serve(
    settings: RecoverySettings,
    stop: asyncio.Event,
    *,
    tracer_provider: TracerProvider | None = None,
    on_poisoned: Callable[[CommitOutcomeUnknown], None] | None = None,
) -> None:
    """Run until `stop` is set, then drain and hand unfinished sagas back. Spans go to
    `tracer_provider` (the process's global one when None): a resumed saga's spans join
    the trace stored with it in the log (engine/tracing.py). `on_poisoned` hears a log
    write whose COMMIT outcome is unknown (the process passes engine.sqlite.end_process)."""
    registry = CollectorRegistry()
    metrics = SagaMetrics(registry, recovery=True)
    host, port = settings.metrics_addr
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise EngineError(
            f"cannot serve metrics on {format_addr(settings.metrics_addr)}: {exc.strerror}"
        ) from exc
    opened = asyncio.Event()

    async def run() -> None:
        pruner: asyncio.Task[None] | None = None
        async with order_runtime(
            settings.drive,
            role="recovery",
            capacity=settings.concurrency,
            poll_s=settings.interval_s,
            metrics=metrics,
            crash=settings.crash,
            tracer_provider=tracer_provider,
            on_waiting=lambda _err: None,  # logged once by the opener; metrics stay up
        ) as runtime:
            opened.set()
            clock = runtime.log.clock  # the runner's too: leases and ages on one timeline
            if on_poisoned is not None and isinstance(runtime.log, SqliteSagaLog):
                runtime.log.on_poisoned(on_poisoned)
            log.info(
                "recovery daemon scanning %s every %.1fs (metrics on %s)",
                settings.drive.log.where,
                settings.interval_s,
                format_addr(settings.metrics_addr),
            )
            if settings.history_retention_ms is not None:
                retention = Retention(
                    runtime.log,
                    clock,
                    retention_ms=settings.history_retention_ms,
                    every_s=settings.prune_interval_s,
                    on_pruned=metrics.sagas_pruned,
                )
                pruner = asyncio.create_task(retention.run(stop), name="history-retention")
            try:
                while not stop.is_set():
                    with contextlib.suppress(EngineError):
                        await metrics.sample(runtime.log, clock.now_ms())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(settings.interval_s, 5.0))
            finally:
                if pruner is not None:
                    pruner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pruner

    try:
        # A database that cannot be reached yet is waited for (the metrics endpoint is up
        # meanwhile); a stop while waiting ends the wait, as there is nothing to drain.
        work = asyncio.create_task(run(), name="recovery")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not work.done() and not opened.is_set():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
    finally:
        server.shutdown()
        thread.join(timeout=2)
        log.info("recovery daemon stopped")
