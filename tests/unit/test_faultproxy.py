"""The fault proxy of the network tests (tests/support/faultproxy.py), mode by mode, against
a plain echo server and a real gRPC server: each fault does what the network tests claim."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from tests.support.faultproxy import FaultProxy, Mode


class _Echo(socketserver.BaseRequestHandler):
    received: list[bytes]

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # the proxy's RST, on purpose
            while data := self.request.recv(4096):
                self.received.append(data)
                self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Echo", (_Echo,), {"received": received})
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: tuple[int, list[bytes]]) -> Iterator[FaultProxy]:
    with FaultProxy(echo[0]) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def ask(sock: socket.socket, data: bytes = b"ping", timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(data)
    return sock.recv(4096)


def test_pass_relays_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert ask(sock, b"hello") == b"hello"
        assert ask(sock, b"again") == b"again"
    assert proxy.stats["connections"] == 1


def test_latency_delays_each_chunk_and_heals(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.set(Mode.LATENCY, delay_s=0.3)
        started = time.monotonic()
        assert ask(sock) == b"ping"
        assert time.monotonic() - started >= 0.55, "0.3 s each way"
        proxy.heal()
        started = time.monotonic()
        assert ask(sock) == b"ping"
        assert time.monotonic() - started < 0.25


def test_latency_per_connection_delays_only_the_start(proxy: FaultProxy) -> None:
    proxy.set(Mode.LATENCY, delay_s=0.4, per_connection=True)
    started = time.monotonic()
    with connect(proxy) as sock:
        assert ask(sock) == b"ping"
        assert time.monotonic() - started >= 0.35
        started = time.monotonic()
        assert ask(sock) == b"ping"
        assert time.monotonic() - started < 0.25


def test_blackhole_swallows_and_a_holed_connection_stays_dead(
    proxy: FaultProxy, echo: tuple[int, list[bytes]]
) -> None:
    with connect(proxy) as old:
        assert ask(old) == b"ping"
        proxy.set(Mode.BLACKHOLE)
        with pytest.raises(TimeoutError):
            ask(old, b"lost", timeout=0.3)
        with connect(proxy) as new, pytest.raises(TimeoutError):
            ask(new, b"lost too", timeout=0.3)
        proxy.heal()
        with pytest.raises(TimeoutError):
            ask(old, b"still lost", timeout=0.3)
        with connect(proxy) as fresh:
            assert ask(fresh) == b"ping"
    assert b"".join(echo[1]) == b"pingping", "nothing swallowed reached the server"
    assert proxy.stats["swallowed"] >= 3


def test_reset_forwards_the_request_and_loses_the_reply(
    proxy: FaultProxy, echo: tuple[int, list[bytes]]
) -> None:
    with connect(proxy) as sock:
        assert ask(sock) == b"ping"
        proxy.set(Mode.RESET)
        with pytest.raises(ConnectionResetError):
            ask(sock, b"acted")
    deadline = time.monotonic() + 2
    while b"acted" not in echo[1]:
        assert time.monotonic() < deadline, "the request reached the server"
        time.sleep(0.01)
    proxy.heal()
    with connect(proxy) as sock:
        assert ask(sock) == b"ping"


def test_refuse_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as old:
        assert ask(old) == b"ping"
        proxy.set(Mode.REFUSE)
        assert reset(lambda: ask(old))
    assert reset(lambda: ask_anew(proxy))  # at connect, or at the first read
    proxy.heal()
    with connect(proxy) as sock:
        assert ask(sock) == b"ping"


def ask_anew(proxy: FaultProxy) -> bytes:
    with connect(proxy) as sock:
        return ask(sock)


def reset(call: Callable[[], bytes]) -> bool:
    """The peer reset (or closed) the connection: no answer, and no waiting for one."""
    try:
        return call() == b""
    except ConnectionError:
        return True


def test_close_stops_the_thread_and_the_port(echo: tuple[int, list[bytes]]) -> None:
    proxy = FaultProxy(echo[0]).start()
    with connect(proxy) as sock:
        assert ask(sock) == b"ping"
        proxy.close()
        assert not proxy._thread.is_alive()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1)


def same(data: bytes) -> bytes:
    return data


def test_reset_on_grpc_lets_the_call_run_and_loses_its_answer() -> None:
    """With http2, RESET waits for the response's HEADERS: the handler has run."""
    calls: list[bytes] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append(request)
        return request

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "t.T", {"Do": grpc.unary_unary_rpc_method_handler(handle)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with FaultProxy(port, http2=True) as proxy, grpc.insecure_channel(proxy.address) as ch:
            do = ch.unary_unary("/t.T/Do", request_serializer=same, response_deserializer=same)
            assert do(b"one", timeout=5) == b"one"
            proxy.set(Mode.RESET)
            with pytest.raises(grpc.RpcError) as err:
                do(b"two", timeout=5)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
            assert calls == [b"one", b"two"], "the call ran; only its answer was lost"
            proxy.heal()
            assert do(b"three", timeout=5, wait_for_ready=True) == b"three"
    finally:
        server.stop(0)
