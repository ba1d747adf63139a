"""Server bootstrap shared by the three services: one lifespan that owns start-up and
shutdown.

Start-up: open the ledger (a SQLite file: migrate, then e.g. seed the stock; PostgreSQL:
the same once the database answers), build the grpc.aio server with the service's
servicer and grpc's health service, bind the address (mutual TLS when the settings carry
certificates), start, and only then report SERVING. Shutdown (SIGTERM or SIGINT): the
handler only sets a flag; the lifespan then reports NOT_SERVING, stops the server with a
grace period for calls in flight, and closes the ledger after its queued writes are
durable.

A SQLite ledger write whose COMMIT outcome is unknown ends a serving process at once, exit
code 74 (engine.sqlite.end_process): its callers see UNAVAILABLE and retry, and the next
start reads what is really durable. A PostgreSQL ledger goes on (its next transaction reads
the truth from the server); the call whose COMMIT was cut answers UNKNOWN.

A ledger in PostgreSQL may be away: the service then still starts, answers UNAVAILABLE,
and a watcher keeps the health status NOT_SERVING until the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from engine.config import Address, format_addr
from engine.errors import ListenError, StorageError, StorageFault, unreachable
from engine.net import TlsFiles, is_loopback
from engine.sqlite import end_process
from services.common.backend import Ledger
from services.common.edge import Edge
from services.common.faults import FaultInjector, FaultPlan
from services.common.observe import MetricsEndpoint, interceptors
from services.settings import ServiceSettings

__all__ = ["RunningService", "ServiceSpec", "serve", "start"]

log = logging.getLogger(__name__)

L = TypeVar("L", bound=Ledger)
HEALTH_POLL_S: Final = 1.0  # how often the health status follows the ledger's


class Health(Protocol):
    """grpc's asyncio health servicer (its stubs lack the aio module)."""

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus
    ) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceSpec(Generic[L]):
    """What makes one service: how its ledger opens, and its servicers."""

    name: str
    service_names: tuple[str, ...]  # full gRPC names, reported to the health service
    open_ledger: Callable[[ServiceSettings], Awaitable[L]]
    register: Callable[[grpc.aio.Server, Edge, L], None]


@dataclass(slots=True)
class RunningService:
    spec: ServiceSpec[Any]  # any service's: only its name is read here
    settings: ServiceSettings
    server: grpc.aio.Server
    health: Health
    ledger: Ledger
    port: int
    metrics: MetricsEndpoint | None = None
    watcher: asyncio.Task[None] | None = field(default=None)

    @property
    def address(self) -> str:
        return format_addr((self.settings.addr[0], self.port))

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, then stop taking calls (waiting `grace_s` for those in flight),
        then close the ledger once its queued writes are durable."""
        try:
            if self.watcher is not None:
                self.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.watcher
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self.settings.grace_s if grace_s is None else grace_s)
        finally:
            await self.ledger.close()
            if self.metrics is not None:
                self.metrics.close()


async def start(
    spec: ServiceSpec[L],
    settings: ServiceSettings,
    *,
    tracer_provider: TracerProvider | None = None,
) -> RunningService:
    """Open the ledger and start serving; raises EngineError subclasses for a bad ledger
    file (StorageError, MigrationError, LedgerOpenError), a database that refuses the
    service (StorageError CANTOPEN, SchemaTooNew) or an address (ListenError); a database
    that does not answer yet is waited for while serving UNAVAILABLE.
    `tracer_provider`: where the server spans go (the process's global one when None)."""
    ledger = await spec.open_ledger(settings)
    try:
        try:
            await ledger.ready()
        except StorageError as exc:
            if exc.fault is StorageFault.CANTOPEN:
                raise  # it refuses this service (password, no such database): say so now
            if unreachable(exc):  # the ledger's Outage has said so, once
                log.info("%s: answering UNAVAILABLE until the ledger is back", spec.name)
            else:
                why = exc.message
                log.warning("%s: %s; answering UNAVAILABLE until it is back", spec.name, why)
        registry = CollectorRegistry()
        # SO_REUSEPORT is grpc's default on Linux: without turning it off a second service
        # on the same port would start "fine" and share the traffic of the first.
        server = grpc.aio.server(
            interceptors=interceptors(spec.name, registry, tracer_provider),
            options=[("grpc.so_reuseport", 0)],
        )
        spec.register(server, Edge(FaultInjector(settings.faults)), ledger)
        health: Health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        port = _bind(server, settings.addr, spec.name, settings.tls)
        metrics = None
        if settings.metrics_addr is not None:
            metrics = MetricsEndpoint.start(settings.metrics_addr, registry, spec.name)
        await server.start()
    except BaseException:
        await ledger.close()
        raise
    names = ("", *spec.service_names)
    serving = await ledger.check()
    if serving:
        await _set(health, names, serving=True)
    watcher = asyncio.create_task(
        _follow(ledger, health, names, serving), name=f"{spec.name}-health"
    )
    return RunningService(spec, settings, server, health, ledger, port, metrics, watcher)


async def _follow(ledger: Ledger, health: Health, names: tuple[str, ...], serving: bool) -> None:
    """Keep the health status SERVING while the ledger can be used, NOT_SERVING while not."""
    while True:
        await asyncio.sleep(HEALTH_POLL_S)
        now = await ledger.check()
        if now != serving:
            await _set(health, names, serving=now)
            # The change itself is logged by the ledger (engine/pg/outage.py): once.
            log.debug("ledger %s is %s", ledger.where, "back" if now else "unavailable")
            serving = now


async def _set(health: Health, names: tuple[str, ...], *, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.NOT_SERVING
    if serving:
        status = health_pb2.HealthCheckResponse.SERVING
    for name in names:
        await health.set(name, status)


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Mutual TLS: a caller without a certificate signed by the CA fails the handshake,
    before any call reaches a servicer or a ledger."""
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )


def _bind(server: grpc.aio.Server, addr: Address, name: str, tls: TlsFiles | None) -> int:
    target = format_addr(addr)
    reason = _unbindable(addr) if addr[1] != 0 else None
    if reason is None:
        try:
            if tls is None:
                port = server.add_insecure_port(target)
            else:
                port = server.add_secure_port(target, _server_credentials(tls))
        except RuntimeError:
            port = 0
        if port > 0:
            return port
        reason = "the address cannot be bound"  # grpc answers 0 (or raises) and says no more
    raise ListenError(f"cannot listen on {target} for the {name} service: {reason}")


def _unbindable(addr: Address) -> str | None:
    """Ask the OS first whether the address can be bound, so that a taken port is one
    clear error: grpc only says that binding failed (and logs a line of its own)."""
    host, port = addr
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As grpc does: connections in TIME_WAIT from a killed predecessor are no obstacle.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                errors.append(exc)
    in_use = [exc for exc in errors if exc.errno == errno.EADDRINUSE]
    if in_use or len(errors) == len(infos):
        first = (in_use or errors)[0]
        return first.strerror or str(first)
    return None


async def serve(spec: ServiceSpec[L], settings: ServiceSettings) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    _warn_if_faults(settings.faults, spec.name)
    _warn_if_open(settings, spec.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before start-up, so that a SIGTERM while the ledger opens stops cleanly
    # right after, instead of killing the process half-way.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        running = await start(spec, settings)
        running.ledger.on_poisoned(end_process)
        metrics = f", metrics on {running.metrics.address}" if running.metrics else ""
        print(
            f"{spec.name} serving on {running.address} (ledger {running.ledger.where}{metrics})",
            flush=True,
        )
        try:
            await stop.wait()
            log.info("%s: stopping (grace %.1fs)", spec.name, settings.grace_s)
        finally:
            await running.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
    log.info("%s: stopped", spec.name)


def _warn_if_open(settings: ServiceSettings, name: str) -> None:
    if settings.tls is None and not is_loopback(settings.addr[0]):
        log.warning(
            "!!! %s: listening on %s WITHOUT TLS: anything that reaches this port can "
            "reserve, charge or cancel. Set SAGA_GRPC_TLS_CERT, SAGA_GRPC_TLS_KEY and "
            "SAGA_GRPC_TLS_CA (docs/scale-out.md#replicas-and-tls), or listen on 127.0.0.1. !!!",
            name,
            format_addr(settings.addr),
        )


def _warn_if_faults(plan: FaultPlan, name: str) -> None:
    if plan.active:
        log.warning(
            "!!! %s: FAULT INJECTION IS ON (SAGA_ENV=test): faults %s; x-test-fault metadata "
            "honoured. Never run this in production. !!!",
            name,
            plan.describe(),
        )
