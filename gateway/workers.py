"""`SAGA_GATEWAY_WORKERS=N` (N > 1): N gateway processes serve one HTTP port, so that
taking orders and driving their sagas use every core instead of one.

`saga gateway` binds the port (a taken port is still one clear error), then supervises N
workers, `saga gateway --listen-fd FD`, with `saga up`'s supervisor: each inherits the
listening socket and accepts from its one queue (a connection waiting there is taken by
whichever worker is free, and outlives a worker that dies), and each runs its own runner
over the shared saga log, as a second gateway would: its own owner id and leases, its own
writer taking SQLite's write lock in turn (engine/sqlite.py, BUSY_POLL_S). A worker that
dies is started again; what it had acknowledged is in the log, and the recovery daemon
finishes its sagas once their leases end, as for any dead gateway. SIGTERM stops every
worker gracefully (each drains its sagas), then the supervisor.

What is per worker: SAGA_RUNNER_CAPACITY, SAGA_MAX_QUEUE's check and /metrics (a scrape
reaches one worker). The in-memory log cannot be shared: N > 1 is refused with it.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from engine.errors import ListenError
from gateway.settings import GatewaySettings
from saga.up import UpSettings, supervise

__all__ = ["inherited_socket", "run_workers"]

# Past a worker's drain, how long the supervisor waits before it SIGKILLs it.
STOP_MARGIN_S = 5.0


def run_workers(sock: socket.socket, settings: GatewaySettings, env: Mapping[str, str]) -> int:
    """Serve `sock` with settings.workers worker processes until SIGTERM/SIGINT; the exit
    code (saga.up.supervise's)."""
    fd = sock.fileno()
    argv = ("gateway", "--listen-fd", str(fd))
    grace = UpSettings(grace_s=settings.drive.drain_s + STOP_MARGIN_S)
    return supervise([argv] * settings.workers, env, grace, pass_fds=(fd,))


def inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket a worker inherited as `fd`, or a ListenError."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenError(f"--listen-fd {fd}: not an open socket ({exc.strerror})") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close
        raise ListenError(f"--listen-fd {fd}: not a listening TCP socket")
    return sock
