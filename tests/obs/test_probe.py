"""`saga probe`, the containers' healthcheck: exit 0 for a SERVING gRPC server or a 2xx
answer, 1 with one line saying why otherwise."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from saga.cli import main
from tests.support.procs import free_port
from tests.unit.test_probes import speaking_http2


@pytest.fixture
def grpc_health() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def probe(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["probe", *args])
    return result.exit_code, result.output


def test_grpc_serving_is_healthy_and_not_serving_is_not(
    grpc_health: tuple[str, health.HealthServicer],
) -> None:
    address, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe("grpc", address) == (0, "")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, output = probe("grpc", address)
    assert code == 1 and output.strip() == f"saga: probe: {address}: NOT_SERVING"
    code, output = probe("grpc", address, "--service", "order.v1.Order")
    assert code == 1 and "NOT_FOUND" in output


def test_grpc_nobody_listening_is_unhealthy() -> None:
    code, output = probe("grpc", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert code == 1 and "UNAVAILABLE" in output


def test_http_2xx_is_healthy_and_anything_else_is_not(http_server: str) -> None:
    assert probe("http", f"{http_server}/healthz") == (0, "")
    code, output = probe("http", f"{http_server}/readyz")
    assert code == 1 and output.strip().endswith("HTTP 503")
    code, output = probe("http", f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "0.5")
    assert code == 1 and "refused" in output


def test_http_against_something_that_does_not_speak_http_is_one_line() -> None:
    # A probe pointed at a gRPC port by mistake reads HTTP/2 frames: unhealthy, said once.
    with speaking_http2() as url:
        code, output = probe("http", url)
    assert code == 1 and "not an HTTP/1.1 answer" in output, output
    assert len(output.strip().splitlines()) == 1, output
