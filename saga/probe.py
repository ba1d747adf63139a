"""`saga probe`: the health probes of the container images (python:3.11-slim has no curl,
and a gRPC health probe is a binary of its own). Each answers None when the target is
healthy, else why not, in a few words for `docker inspect`."""

from __future__ import annotations

import urllib.error
import urllib.request

__all__ = ["probe_grpc", "probe_http"]


def probe_grpc(address: str, service: str = "", timeout_s: float = 2.0) -> str | None:
    """The standard gRPC health check of `service` ("" = the server) at host:port."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
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
    """A GET that answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url}: {reason}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"
