"""One builder of what a process needs to drive order sagas: the saga log, the
participants' clients, the order saga's definition and a runner over them, with spans and
metrics on every attempt. The gateway and the recovery daemon both enter `order_runtime`
and differ only in what they pass (capacity, how often the pump polls)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from engine.clock import Clock
from engine.config import env_float
from engine.crashpoints import CrashPoints
from engine.definition import SagaDefinition
from engine.errors import StorageError
from engine.log_settings import SagaLogSettings, open_saga_log, open_saga_log_patiently
from engine.metrics import SagaMetrics
from engine.runner import Runner, RunnerSettings, new_owner_id
from engine.saga_log import SagaLog
from engine.telemetry import exports
from engine.tracing import TracingHooks
from orders.participants import Participants, ServiceAddresses
from orders.saga import OrderSagaPolicy, order_saga

__all__ = ["DriveSettings", "OrderRuntime", "order_runtime"]


@dataclass(frozen=True, slots=True)
class DriveSettings:
    """What every process that drives order sagas reads the same way, so that a saga is
    driven by the same log, services, budgets and lease whoever drives it."""

    log: SagaLogSettings = field(default_factory=SagaLogSettings)
    services: ServiceAddresses = field(default_factory=lambda: ServiceAddresses.from_env({}))
    policy: OrderSagaPolicy = field(default_factory=OrderSagaPolicy)
    lease_s: float = 10.0  # SAGA_LEASE_S: an owner's claim without a heartbeat
    drain_s: float = 10.0  # SAGA_DRAIN_S: on stopping, how long calls in flight may finish

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DriveSettings:
        return cls(
            log=SagaLogSettings.from_env(env),
            services=ServiceAddresses.from_env(env),
            policy=OrderSagaPolicy.from_env(env),
            lease_s=env_float(env, "SAGA_LEASE_S", 10.0, minimum=0.1),
            drain_s=env_float(env, "SAGA_DRAIN_S", 10.0),
        )


@dataclass(frozen=True, slots=True)
class OrderRuntime:
    """A started runner and what it runs on."""

    log: SagaLog
    participants: Participants
    definition: SagaDefinition
    runner: Runner


@contextlib.asynccontextmanager
async def order_runtime(
    settings: DriveSettings,
    *,
    role: str,
    capacity: int,
    metrics: SagaMetrics,
    poll_s: float = 1.0,
    max_queue: int | None = None,
    log: SagaLog | None = None,
    participants: Participants | None = None,
    policy: OrderSagaPolicy | None = None,
    owner: str | None = None,
    clock: Clock | None = None,
    crash: CrashPoints | None = None,
    tracer_provider: TracerProvider | None = None,
    on_waiting: Callable[[StorageError], None] | None = None,
) -> AsyncIterator[OrderRuntime]:
    """Open what is not given (a caller's `log` or `participants` stay the caller's to
    close), start the runner, and on leaving stop it (drain, hand sagas back) and close
    what was opened here, in reverse order. `role` names the owner ("gateway@host:pid:…");
    `max_queue` bounds the sagas waiting in the log for a slot (Runner.start_saga);
    `policy` overrides the settings' retry budgets (tests); spans go to `tracer_provider`
    (the process's global one when None). With `on_waiting`, a database that cannot be
    reached yet is waited for, not an error: `on_waiting` hears when the wait starts
    (engine.log_settings.open_saga_log_patiently)."""
    async with contextlib.AsyncExitStack() as stack:
        saga_log = log
        if saga_log is None:
            name = f"saga-{role}"
            if on_waiting is None:
                opened = await open_saga_log(
                    settings.log, on_batch=metrics.on_batch, application_name=name
                )
            else:
                opened = await open_saga_log_patiently(
                    settings.log,
                    on_waiting=on_waiting,
                    on_batch=metrics.on_batch,
                    application_name=name,
                )
            stack.push_async_callback(opened.close)
            saga_log = opened
        parts = participants
        if parts is None:
            parts = Participants(settings.services, tracer_provider=tracer_provider)
            stack.push_async_callback(parts.close)
        definition = order_saga(parts, policy or settings.policy)
        metrics.declare(definition.name)
        provider = tracer_provider or trace.get_tracer_provider()
        tracer = provider.get_tracer("saga.engine")
        runner = Runner(
            saga_log,
            [definition],
            RunnerSettings(
                owner=owner or new_owner_id(role),
                lease_s=settings.lease_s,
                capacity=capacity,
                poll_s=poll_s,
                drain_s=settings.drain_s,
                max_queue=max_queue,
            ),
            clock=clock,
            hooks=TracingHooks(metrics, tracer, light=not exports(provider)),
            crash=crash,
        )
        await runner.start()
        stack.push_async_callback(runner.stop)
        yield OrderRuntime(saga_log, parts, definition, runner)
