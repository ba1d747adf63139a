"""A TCP proxy that breaks the network on demand, for tests: it listens on a free loopback
port, forwards to a loopback target, and switches at run time between faults.

    with FaultProxy(target_port, http2=True) as proxy:   # proxy.address: "127.0.0.1:PORT"
        proxy.set(Mode.LATENCY, delay_s=1.5)              # every chunk 1.5 s late
        proxy.set(Mode.RESET)                             # the service acts, the reply is lost
        proxy.heal()

Modes, as the client sees them:
- PASS: a plain relay.
- LATENCY: each chunk is delivered `delay_s` late, in order (or, `per_connection`, a new
  connection waits `delay_s` before it reaches the target).
- BLACKHOLE: connections are accepted and read, and nothing is forwarded or answered. A
  connection that swallowed bytes stays a black hole after healing: a byte stream with a
  hole in it cannot be resumed, so it is the half-open socket a vanished peer leaves.
- RESET: what the client sends is forwarded; the first reply (with `http2`, the first
  HEADERS frame of a response, i.e. the call has run) aborts both sockets with RST.
- REFUSE: every open connection is reset, and so is each new one as soon as it is accepted.
  (The port stays bound: giving it up could let another socket take it.)

The proxy runs its own event loop in a daemon thread, so sync tests drive it; only
127.0.0.1 is ever listened on or connected to."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self, TypeVar

__all__ = ["FaultProxy", "Mode"]

T = TypeVar("T")
LOOPBACK: Final = "127.0.0.1"
HEADERS_FRAME: Final = 0x1
CHUNK: Final = 65536


class Mode(StrEnum):
    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class _Fault:
    mode: Mode = Mode.PASS
    delay_s: float = 0.0
    per_connection: bool = False


class _Frames:
    """Finds the HTTP/2 frames that start a response in a server's byte stream."""

    def __init__(self) -> None:
        self._head = b""
        self._skip = 0  # payload bytes of the current frame still to come

    def has_response(self, chunk: bytes) -> bool:
        seen, data, i = False, self._head + chunk, 0
        while True:
            step = min(self._skip, len(data) - i)
            self._skip -= step
            i += step
            if len(data) - i < 9:
                self._head = data[i:]
                return seen
            length = int.from_bytes(data[i : i + 3], "big")
            kind, stream = data[i + 3], int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF
            seen = seen or (kind == HEADERS_FRAME and stream != 0)
            self._skip, i = length, i + 9


class _Conn:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.black = False  # swallowed bytes: never forwards again

    def _writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.server) if w is not None]

    def abort(self) -> None:
        """RST both ways: SO_LINGER 0, then close without flushing."""
        for w in self._writers():
            if not w.transport.is_closing():
                with contextlib.suppress(OSError):
                    w.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            w.transport.abort()

    def close(self) -> None:
        for w in self._writers():
            w.close()


class FaultProxy:
    def __init__(self, target_port: int, *, http2: bool = False, name: str = "") -> None:
        self.target_port = target_port
        self.http2 = http2  # how RESET recognises a reply: an HTTP/2 response, or any byte
        self.name = name or f"proxy->{target_port}"
        self.port = 0
        self.stats: Counter[str] = Counter()  # connections, resets, swallowed, delayed
        self._fault = _Fault()
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._fault.mode

    def start(self) -> Self:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, LOOPBACK, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set(self, mode: Mode, *, delay_s: float = 0.0, per_connection: bool = False) -> None:
        self._run(self._set(_Fault(mode, delay_s, per_connection)))

    def heal(self) -> None:
        self.set(Mode.PASS)

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        return self if self.port else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # ---- on the proxy's loop -------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set(self, fault: _Fault) -> None:
        self._fault = fault
        if fault.mode is Mode.REFUSE:
            for conn in list(self._conns):
                self.stats["resets"] += 1
                conn.abort()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        conn = _Conn(writer)
        fault = self._fault
        if fault.mode is Mode.REFUSE:
            self.stats["resets"] += 1
            conn.abort()
            return
        self._conns.add(conn)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if fault.mode is Mode.BLACKHOLE:
                conn.black = True
                while await reader.read(CHUNK):
                    self.stats["swallowed"] += 1
                return
            if fault.mode is Mode.LATENCY and fault.per_connection:
                await asyncio.sleep(fault.delay_s)
            up_reader, conn.server = await asyncio.open_connection(LOOPBACK, self.target_port)
            await asyncio.gather(
                self._pump(conn, reader, conn.server, None),
                self._pump(conn, up_reader, writer, _Frames() if self.http2 else None, True),
            )
        except OSError:
            conn.abort()
        except asyncio.CancelledError:
            pass  # closing; asyncio would report a cancelled handler as an error
        finally:
            self._conns.discard(conn)
            self._handlers.discard(handler)
            conn.close()

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        frames: _Frames | None, to_client: bool = False,
    ) -> None:  # fmt: skip
        """One direction. Chunks go through a queue so that a delay postpones each one
        without holding up the reading of the next: in order, each `delay_s` after it came."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        delivering = asyncio.create_task(self._deliver(conn, queue, writer))
        due = 0.0
        try:
            while chunk := await reader.read(CHUNK):
                fault = self._fault
                if conn.black or fault.mode is Mode.BLACKHOLE:
                    conn.black = True
                    self.stats["swallowed"] += 1
                    continue
                # Every reply chunk goes through the parser, so frame boundaries stay known.
                reply = to_client and (frames is None or frames.has_response(chunk))
                if reply and fault.mode is Mode.RESET:
                    self.stats["resets"] += 1
                    conn.abort()
                    return
                delay = 0.0
                if fault.mode is Mode.LATENCY and not fault.per_connection:
                    delay = fault.delay_s
                    self.stats["delayed"] += 1
                due = max(due, time.monotonic() + delay)
                queue.put_nowait((due, chunk))
            if conn.black and to_client:
                return  # a black hole never tells its client that the server went away
            queue.put_nowait((due, b""))
            await delivering
        except OSError:
            conn.abort()
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)

    async def _deliver(
        self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if conn.black:
                    continue
                if not chunk:  # one side closed: so does the other
                    conn.close()
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:
            conn.abort()
