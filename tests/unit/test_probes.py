"""saga.probes, behind every real-process helper: a stack's processes never share a port.

A gateway once got the same port as a gRPC service of its own stack (CI): gRPC binds with
SO_REUSEPORT, the gateway could not bind, and its readiness probe read HTTP/2 frames.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from saga.probes import free_port, http_ok


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if anything holds it


@contextlib.contextmanager
def speaking_http2() -> Iterator[str]:
    """A URL whose server answers one request with HTTP/2 frames, as a gRPC port would."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer_with_http2_frames() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x7f\xff\xff\xff\n")

        thread = threading.Thread(target=answer_with_http2_frames, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.getsockname()[1]}/healthz"
        thread.join(timeout=5)


def test_a_probe_of_something_that_does_not_speak_http_is_not_ready() -> None:
    with speaking_http2() as url:
        assert http_ok(url) is False
