"""The load generator of `bench peers`' kill -9 half: it keeps every promise a careful
client keeps when the server it talks to dies under it.

`concurrency` threads each send `POST` after `POST` (a new idempotency key each) until
told to stop; a POST that fails (connection refused or reset, a timeout, any answer but
the peer's acknowledgement) is sent again with the same key, every 50 ms, until it is
acknowledged or `give_up_s` after the stop. Every acknowledgement is recorded with the
id the peer answered (the order id; DBOS's workflow id; Restate's invocation id). No
latency is kept: this load is about what is lost or doubled, not speed.

Threads and http.client, not asyncio: the server vanishes and comes back on the same
port, and a blocking client with a fresh connection per attempt after a failure is the
simplest thing that cannot get confused by it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Acked", "RetryLoad", "post_once"]

_BODY: Final = json.dumps(
    {"customer_id": "cust_bench", "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.0}]}
).encode()
_RETRY_S: Final = 0.05
_TIMEOUT_S: Final = 10.0


@dataclass
class Acked:
    """What the load saw: each acknowledged key's id, and how many POSTs failed."""

    ids: dict[str, str] = field(default_factory=dict)  # key: the id its ack named
    tried: set[str] = field(default_factory=set)  # every key sent at least once
    failed_posts: int = 0  # attempts that were not acknowledged (each retried)
    abandoned: list[str] = field(default_factory=list)  # keys never acknowledged


def _id_of(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return str(doc.get("id") or doc.get("invocationId") or "")


def post_once(
    conn: http.client.HTTPConnection, path: str, key_header: str, key: str, ack: int
) -> str | None:
    """One POST with `key`; the id the acknowledgement named, or None when there was none
    (the caller opens a new connection after a None)."""
    headers = {"Content-Type": "application/json", key_header: key}
    conn.request("POST", path, body=_BODY, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    return _id_of(body) or None if resp.status == ack else None


class RetryLoad:
    """`start`, then `stop` (which waits for every key in flight to be acknowledged or
    abandoned) returns what was acknowledged."""

    def __init__(
        self, port: int, path: str, key_header: str, ack: int, concurrency: int, prefix: str
    ) -> None:
        self._where = ("127.0.0.1", port)
        self._path, self._header, self._ack = path, key_header, ack
        self._prefix = prefix
        self._stop = threading.Event()
        self._give_up_at = float("inf")
        self._lock = threading.Lock()
        self.acked = Acked()
        self._threads = [
            threading.Thread(target=self._worker, args=(i,), daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> RetryLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self, give_up_s: float = 60.0) -> Acked:
        self._give_up_at = time.monotonic() + give_up_s
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.acked

    def _worker(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"{self._prefix}-{index}-{n}"
            with self._lock:
                self.acked.tried.add(key)
            while True:
                if conn is None:
                    conn = http.client.HTTPConnection(*self._where, timeout=_TIMEOUT_S)
                try:
                    got = post_once(conn, self._path, self._header, key, self._ack)
                except (OSError, http.client.HTTPException):
                    got = None
                if got is not None:
                    with self._lock:
                        self.acked.ids[key] = got
                    break
                conn.close()
                conn = None
                with self._lock:
                    self.acked.failed_posts += 1
                if time.monotonic() > self._give_up_at:
                    with self._lock:
                        self.acked.abandoned.append(key)
                    break
                time.sleep(_RETRY_S)
        if conn is not None:
            conn.close()
