"""Probes of processes from the outside: is a gRPC server SERVING, does a URL answer 2xx,
does a port accept connections; and free ports for processes about to be started.

`saga probe` is the container images' healthcheck (python:3.11-slim has no curl, and a
gRPC health probe is a binary of its own): it needs why a target is unhealthy, in a few
words for `docker inspect`, so the probes answer None when healthy, else why not. The
benchmarks and the tests only wait until a process is ready: `grpc_serving` and `http_ok`
are the same checks as booleans, with a short timeout for polling.
"""

from __future__ import annotations

import http.client
import random
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from engine.net import TlsFiles

__all__ = [
    "free_port",
    "grpc_serving",
    "http_ok",
    "probe_grpc",
    "probe_http",
    "tcp_open",
]


def probe_grpc(
    address: str, service: str = "", timeout_s: float = 2.0, tls: TlsFiles | None = None
) -> str | None:
    """The standard gRPC health check of `service` ("" = the server) at host:port (or any
    `*_SERVICE_ADDR` form): None when it is SERVING, else why not. `tls`: the caller's
    certificate for a service that serves mutual TLS; without it such a service refuses
    the handshake (UNAVAILABLE)."""
    # Imported here: `saga probe http` and the processes that only poll HTTP or TCP
    # should not pay for loading gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from engine.net import parse_target
    from orders.channels import sync_channel

    with sync_channel(parse_target(address, "address"), tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return f"{address}: {getattr(code, 'name', 'no answer')}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def probe_http(url: str, timeout_s: float = 2.0) -> str | None:
    """A GET of `url`: None when it answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, unknown host
        return f"{url}: {getattr(exc, 'reason', exc)}"
    except http.client.HTTPException as exc:
        # Something listens but does not speak HTTP/1.1: a gRPC server answers with
        # HTTP/2 frames, which is a port mix-up to report, not a crash of the probe.
        return f"{url}: not an HTTP/1.1 answer ({type(exc).__name__})"
    except ValueError as exc:  # not a URL urllib can fetch
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def grpc_serving(
    address: str, service: str = "", timeout: float = 0.5, tls: TlsFiles | None = None
) -> bool:
    """True when the gRPC health check of `service` ("" = the server) says SERVING."""
    return probe_grpc(address, service, timeout, tls) is None


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """True when a GET of `url` answers 2xx."""
    return probe_http(url, timeout) is None


def tcp_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Ports this process has handed out: a port is given once, so two processes of one stack
# (or a daemon started while the gateway is down) never get the same one. gRPC servers
# bind with SO_REUSEPORT, so a duplicate would not even fail: both would listen.
_HANDED_OUT: set[int] = set()
# Below the kernel's ephemeral range, so that no outgoing connection's local port can take
# a chosen port in the moment between choosing it and the server binding it.
_LOW_PORT: Final = 20000


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on, not handed out before by this process, and outside
    the ephemeral range where the kernel could give it to a client socket meanwhile."""
    high = _ephemeral_start()
    rng = random.Random()
    for _ in range(200):
        if high - _LOW_PORT > 1000:
            port = rng.randrange(_LOW_PORT, high)
            usable = _bindable(host, port)
        else:  # an unusual range leaves no room below it: let the OS choose
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port, usable = int(sock.getsockname()[1]), True
        if usable and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free TCP port found in 200 tries")
