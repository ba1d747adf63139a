"""The HTTP load generator of the stack benchmarks: `POST /orders`, in its own process.

It runs apart from the benchmark's process (`python -m bench.loadgen SPEC RESULT`, both
JSON files) so that its CPU is its own and is measured (`cpu_seconds`), and it is as
cheap as a client can be in Python: raw HTTP/1.1 over asyncio streams with keep-alive,
no HTTP library, one `bytes` template per request. At a few thousand requests per second
it uses a fraction of one core, which the reports show beside the numbers.

Two shapes of load:
- closed loop (`rate` None): `concurrency` connections, each sending its next order as
  soon as the previous one is answered: the system's own pace (throughput, latency);
- open loop (`rate` set): orders arrive at a fixed rate whatever happens to the earlier
  ones, each on an idle connection or a new one (at most `max_connections`): an offered
  load that does not slow down when the server does (overload).

Every request is recorded: when it was sent, how long its answer took, its status (or a
negative code for a client-side failure), the order id of a 201, whether a 503 carried
Retry-After, and the error code of the envelope.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "CLIENT_FULL",
    "CONNECT_ERROR",
    "TIMEOUT",
    "LoadChild",
    "LoadResult",
    "LoadSpec",
    "Sample",
    "main",
    "run_load",
]

# Negative statuses: what went wrong on the client's side.
TIMEOUT: Final = -1  # no answer within timeout_s
CONNECT_ERROR: Final = -2  # the connection failed or closed mid-request
CLIENT_FULL: Final = -3  # open loop: max_connections busy, the arrival was not sent
_IDLE_REOPEN_S: Final = 4.0  # uvicorn closes idle keep-alive connections after 5 s


@dataclass(frozen=True, slots=True)
class LoadSpec:
    port: int
    duration_s: float
    host: str = "127.0.0.1"
    concurrency: int = 16  # closed loop: connections, one request in flight on each
    rate: float | None = None  # open loop: orders offered per second
    max_connections: int = 2048  # open loop
    timeout_s: float = 10.0
    price_cents: int = 5000
    key_prefix: str = "bench"  # every order has its own idempotency key: prefix-N


@dataclass(frozen=True, slots=True)
class Sample:
    sent_s: float  # seconds after the load started
    latency_s: float
    status: int  # HTTP status, or TIMEOUT / CONNECT_ERROR / CLIENT_FULL
    order_id: str = ""  # of a 201
    retry_after: bool = False  # the answer carried Retry-After
    error: str = ""  # the envelope's error code of a 4xx/5xx


@dataclass(frozen=True, slots=True)
class LoadResult:
    started_wall_s: float  # time.time() when the load started
    seconds: float  # until the last answer
    cpu_seconds: float  # this load generator's own user + system time
    samples: tuple[Sample, ...] = field(default=())

    def to_json(self) -> str:
        doc = asdict(self)
        doc["samples"] = [list(asdict(s).values()) for s in self.samples]
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        doc = json.loads(text)
        samples = tuple(Sample(*row) for row in doc.pop("samples"))
        return cls(**doc, samples=samples)


def _price(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class _Request:
    """The bytes of one POST /orders, made once per run and filled per order."""

    def __init__(self, spec: LoadSpec) -> None:
        body = (
            '{"customer_id":"cust_bench","items":[{"product_id":"prod_1","quantity":1,'
            f'"price":{_price(spec.price_cents)}}}]}}'
        ).encode()
        self._head = (
            f"POST /orders HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Idempotency-Key: {spec.key_prefix}-"
        ).encode()
        self._body = body

    def bytes(self, n: int) -> bytes:
        return b"%s%d\r\n\r\n%s" % (self._head, n, self._body)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> _Conn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, data: bytes) -> tuple[int, bytes, bytes, bool]:
        """Send one request; (status, lowercased head, body, keep the connection?)."""
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        length = 0
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            length = int(lower[at + 17 : end])
        body = await self.reader.readexactly(length) if length else b""
        self.last_used = time.monotonic()
        return status, lower, body, b"\r\nconnection: close" not in lower

    def close(self) -> None:
        self.writer.close()


def _sample(sent: float, start: float, status: int, lower: bytes, body: bytes) -> Sample:
    latency = time.perf_counter() - sent
    order_id, error = "", ""
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if status == 201:
            order_id = str(doc.get("id", ""))
        elif isinstance(doc, dict):
            error = str(doc.get("error", ""))
    return Sample(
        sent - start,
        latency,
        status,
        order_id,
        b"\r\nretry-after:" in lower,
        error,
    )


class _Load:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.request = _Request(spec)
        self.samples: list[Sample] = []
        self.start = 0.0
        self.n = 0
        self.idle: list[_Conn] = []
        self.open_conns = 0

    def _next(self) -> bytes:
        self.n += 1
        return self.request.bytes(self.n)

    async def _one(self, conn: _Conn | None) -> _Conn | None:
        """Send one order on `conn` (a new connection when None); the connection back if
        it may be used again."""
        spec = self.spec
        data = self._next()
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(spec.timeout_s):
                if conn is None:
                    conn = await _Conn.open(spec.host, spec.port)
                status, lower, body, keep = await conn.exchange(data)
        except TimeoutError:
            self.samples.append(Sample(sent - self.start, time.perf_counter() - sent, TIMEOUT))
            if conn is not None:
                conn.close()
            return None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.samples.append(
                Sample(sent - self.start, time.perf_counter() - sent, CONNECT_ERROR)
            )
            if conn is not None:
                conn.close()
            return None
        self.samples.append(_sample(sent, self.start, status, lower, body))
        if not keep:
            conn.close()
            return None
        return conn

    async def closed_loop(self) -> None:
        deadline = self.start + self.spec.duration_s

        async def worker() -> None:
            conn: _Conn | None = None
            while time.perf_counter() < deadline:
                conn = await self._one(conn)
            if conn is not None:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(self.spec.concurrency)))

    async def open_loop(self, rate: float) -> None:
        spec = self.spec
        total = int(rate * spec.duration_s)
        tasks: set[asyncio.Task[None]] = set()

        async def arrival(conn: _Conn | None) -> None:
            back = await self._one(conn)
            if back is not None:
                self.idle.append(back)
            else:
                self.open_conns -= 1

        for i in range(total):
            due = self.start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = self._idle_conn()
            if conn is None:
                if self.open_conns >= spec.max_connections:
                    self.samples.append(Sample(due - self.start, 0.0, CLIENT_FULL))
                    continue
                self.open_conns += 1
            task = asyncio.create_task(arrival(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(list(tasks))
        for conn in self.idle:
            conn.close()

    def _idle_conn(self) -> _Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if time.monotonic() - conn.last_used < _IDLE_REOPEN_S:
                return conn
            conn.close()  # the server may be closing it: open a fresh one instead
            self.open_conns -= 1
        return None


async def _run(spec: LoadSpec) -> LoadResult:
    load = _Load(spec)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    wall0 = time.time()
    load.start = time.perf_counter()
    if spec.rate is None:
        await load.closed_loop()
    else:
        await load.open_loop(spec.rate)
    seconds = time.perf_counter() - load.start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    return LoadResult(wall0, seconds, cpu, tuple(load.samples))


def run_load(spec: LoadSpec) -> LoadResult:
    """Run the load in this process (the benchmarks call `main` in a child instead)."""
    return asyncio.run(_run(spec))


class LoadChild:
    """The load generator as a child process (what the benchmarks use): `start`, then
    `result` once it has exited (`running` says whether it still is)."""

    def __init__(self, spec: LoadSpec, workdir: Path, name: str = "load") -> None:
        self.spec = spec
        self._spec_path = workdir / f"{name}-spec.json"
        self._result_path = workdir / f"{name}-result.json"
        self._log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LoadChild:
        self._spec_path.write_text(json.dumps(asdict(self.spec)), encoding="utf-8")
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", str(self._spec_path),
                 str(self._result_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def result(self, timeout_s: float) -> LoadResult:
        assert self._proc is not None, "start() first"
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise RuntimeError(f"the load generator did not finish in {timeout_s:g}s") from None
        if code != 0:
            log = self._log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the load generator exited with {code}:\n{log}")
        return LoadResult.from_json(self._result_path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m bench.loadgen SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = LoadSpec(**json.loads(Path(args[0]).read_text(encoding="utf-8")))
    result = run_load(spec)
    Path(args[1]).write_text(result.to_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
