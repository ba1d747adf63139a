"""Entry point of `saga gateway`: settings from the environment, then serve HTTP until
SIGTERM or SIGINT, then stop gracefully.

The order of things, and why:
1. Settings and crash points are built here (a bad value is a SettingsError: one line).
2. The listening socket is bound here, before anything else, so a taken port is one clear
   error rather than uvicorn's log line and exit.
3. The app's lifespan is entered here, not by uvicorn, so that a corrupt or unwritable
   log is an EngineError that the CLI prints as one line (uvicorn would log a traceback).
4. uvicorn serves on the bound socket. On a signal it stops accepting, lets the requests
   in flight finish, and returns; leaving the lifespan then drains the runner and hands
   unfinished sagas back to the log. The process exits 0.
5. A write to the saga log whose COMMIT outcome is unknown ends the process at once, exit
   code 74 (engine.sqlite.end_process), before any request hears of it: a client in
   flight sees its connection drop and retries with its key; the next start reads what
   is really durable.

uvicorn re-raises the signal it caught once it has shut down (to die "of" it); the
handlers installed here receive that re-raise and only set the flag again, so a graceful
stop ends with exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Mapping
from types import FrameType

import uvicorn

from engine import event_loop
from engine.config import Address, format_addr
from engine.crashpoints import CrashPoints
from engine.errors import ListenError
from engine.logging_setup import configure_logging
from engine.sqlite import end_process
from engine.sqlite_log import SqliteSagaLog
from engine.telemetry import setup_tracing
from gateway.app import create_app
from gateway.context import Gateway
from gateway.settings import GatewaySettings
from gateway.workers import inherited_socket, run_workers

__all__ = ["bind", "run_gateway"]

log = logging.getLogger("gateway")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind(addr: Address) -> socket.socket:
    """A listening TCP socket on addr, or a ListenError saying why not."""
    host, port = addr
    target = format_addr(addr)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {target}: cannot resolve {host!r} ({exc.strerror})"
        ) from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: connections in TIME_WAIT from a predecessor are no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {target}: {exc.strerror or exc}") from None
    return sock


def run_gateway(env: Mapping[str, str], *, listen_fd: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code. Bad settings, a taken address or an
    unusable saga log raise an EngineError, which the CLI prints as one line.
    `listen_fd`: serve as one worker of SAGA_GATEWAY_WORKERS on this inherited socket
    (gateway/workers.py); None: bind HTTP_ADDR, then serve, or run the workers."""
    settings = GatewaySettings.from_env(env)
    crash = CrashPoints.from_env(env)
    configure_logging("gateway")
    if listen_fd is None and settings.workers > 1:
        sock = bind(settings.http_addr)
        try:
            return run_workers(sock, settings, env)
        finally:
            sock.close()
    tracing = setup_tracing("gateway", env)
    if crash.armed:
        log.warning("!!! crash point armed (SAGA_ENV=test): %s !!!", crash)
    if not settings.drive.log.durable:
        log.warning("!!! SAGA_LOG_BACKEND=memory (SAGA_ENV=test): NOTHING IS DURABLE !!!")
    try:
        sock = bind(settings.http_addr) if listen_fd is None else inherited_socket(listen_fd)
        try:
            event_loop.run(_serve(settings, crash, sock))
        finally:
            sock.close()
    finally:
        tracing.shutdown()  # flush queued spans
    return 0


async def _serve(settings: GatewaySettings, crash: CrashPoints, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: uvicorn.Server | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)
        if server is not None:
            server.should_exit = True

    previous = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    try:
        app = create_app(settings, crash=crash)
        async with app.router.lifespan_context(app):
            gw: Gateway | None = getattr(app.state, "gateway", None)
            if gw is not None and isinstance(gw.log, SqliteSagaLog):
                gw.log.on_poisoned(end_process)  # a SQLite log is never waited for
            config = uvicorn.Config(
                app,
                lifespan="off",  # entered above
                log_config=None,  # logging is configured by run_gateway
                access_log=False,
                # The C parser (uvicorn would pick h11, pure Python, without it installed):
                # a dependency, so every install parses HTTP at the same cost.
                http="httptools",
                server_header=False,
                # Requests are short; the sagas they start are the runner's to drain.
                timeout_graceful_shutdown=max(1, min(5, round(settings.drive.drain_s))),
            )
            server = uvicorn.Server(config)
            server.should_exit = stop.is_set()  # a signal during start-up
            boot: asyncio.Task[None] = app.state.boot

            def on_boot_done(task: asyncio.Task[None]) -> None:
                # The runtime ended while serving: it was waiting for the database and
                # met an error no wait mends (say, no such database). Stop serving; the
                # lifespan's exit raises it, which the CLI prints as one line (exit 2).
                if not task.cancelled() and task.exception() is not None:
                    assert server is not None
                    server.should_exit = True

            boot.add_done_callback(on_boot_done)
            host, port = sock.getsockname()[:2]
            where = settings.drive.log.where
            print(
                f"gateway serving on http://{format_addr((host, port))} (saga log {where})",
                flush=True,
            )
            await server.serve(sockets=[sock])
            if boot.done() and not boot.cancelled() and boot.exception() is not None:
                # Nothing was taken, so nothing drains: the error is the CLI's one line.
                log.info("stopping: the saga log cannot be used")
            else:
                log.info("stopping: draining sagas in flight (up to %.1fs)", settings.drive.drain_s)
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
    log.info("stopped")
