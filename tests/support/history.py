"""What the clients saw, and one judge of it against what the system ended with.

Clients record each call as JSON lines (one file per test, flushed line by line so that a
killed run still leaves a history): an `invoke` (the idempotency key, the body, the call's
deadline), then exactly one completion:

- `ok`: a 201, with the order id (and whether it was a replay);
- `fail`: a definite answer that created nothing: a 4xx, a 503, or a connection that was
  never made (the request was never sent);
- `unknown`: a timeout, a reset, a 5xx other than 503: the order may or may not exist.

    recorder = Recorder(tmp_path / "history.jsonl")
    resp = recorder.post(http, "client-3", key, body)        # invoke + completion
    verdict = judge(History.read(recorder.path), observe(url, log_path, addresses, settle_s=60))
    assert verdict.ok, verdict.report()

`observe` reads the final state (the saga log and the services through the contract's
audit snapshot, and each order the history names through GET /orders/{id}); `judge` is
pure and says what is wrong, each violation naming its key or order.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import httpx

from engine.core import SagaStatus
from engine.log_settings import SagaLogSettings
from gateway.errors import ApiError
from gateway.order_input import parse_order
from orders.audit import SagaRow, Snapshot, audit
from orders.audit_io import read_snapshot, wait_until_settled
from orders.participants import ServiceAddresses

__all__ = ["Call", "History", "Op", "OpType", "Outcome", "Recorder", "Verdict", "judge", "observe"]

Body = dict[str, Any]  # a POST /orders body, as JSON
LOG_STATUS: Final = {SagaStatus.COMPLETED: "CONFIRMED", SagaStatus.COMPENSATED: "CANCELLED"}
SLACK_S: Final = 1.0  # a call may overrun its deadline by this much (scheduling, a GC)
# Never sent: nothing can have happened.
NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class OpType(StrEnum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Op:
    call: int  # an invoke and its completion share it
    type: OpType
    process: str
    key: str | None
    at: float  # time.monotonic()
    body: Body | None = None  # invoke
    deadline_s: float | None = None  # invoke: the longest the client lets the call take
    status: int | None = None  # the HTTP status, when there was an answer
    order_id: str | None = None  # ok
    replayed: bool = False  # ok: Idempotent-Replayed
    error: str | None = None  # fail, unknown: the error code or the transport error

    def to_json(self) -> str:
        doc = asdict(self)
        return json.dumps({k: v for k, v in doc.items() if v is not None and v is not False})

    @classmethod
    def from_json(cls, line: str) -> Op:
        doc = json.loads(line)
        return cls(**{**doc, "type": OpType(doc["type"])})


@dataclass(frozen=True, slots=True)
class Call:
    invoke: Op
    done: Op | None  # None: the client never finished it

    @property
    def took_s(self) -> float | None:
        return None if self.done is None else self.done.at - self.invoke.at


class Recorder:
    """Appends ops to a JSON-lines file; thread-safe, one line per op, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Numbered on from the calls already in the file: several recorders (one load after
        # another) may append to one history.
        earlier = History.read(path).ops if path.exists() else ()
        self._next = max((op.call for op in earlier), default=0)
        self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _write(self, op: Op) -> Op:
        with self._lock:
            self._file.write(op.to_json() + "\n")
            self._file.flush()
        return op

    def invoke(self, process: str, key: str | None, body: Body, deadline_s: float | None) -> Op:
        with self._lock:
            self._next += 1
            call = self._next
        return self._write(
            Op(call, OpType.INVOKE, process, key, time.monotonic(), body, deadline_s)
        )

    def complete(self, invoke: Op, type_: OpType, **answer: Any) -> Op:
        return self._write(Op(invoke.call, type_, invoke.process, invoke.key, time.monotonic(),
                              **answer))  # fmt: skip

    def post(
        self, http: httpx.Client, process: str, key: str | None, body: Body
    ) -> httpx.Response | None:
        """POST /orders with `key`, recorded; the response, or None when there was none.
        The call's deadline is the sum of the client's per-phase timeouts."""
        t = http.timeout
        phases = (t.pool, t.connect, t.write, t.read)
        deadline = None if None in phases else sum(p for p in phases if p is not None)
        inv = self.invoke(process, key, body, deadline)
        headers = {} if key is None else {"X-Idempotency-Key": key}
        try:
            resp = http.post("/orders", json=body, headers=headers)
        except NOT_SENT as exc:
            self.complete(inv, OpType.FAIL, error=_describe(exc))
            return None
        except httpx.TransportError as exc:
            self.complete(inv, OpType.UNKNOWN, error=_describe(exc))
            return None
        if resp.status_code == 201:
            doc = resp.json()
            replayed = resp.headers.get("Idempotent-Replayed") == "true"
            self.complete(inv, OpType.OK, status=201, order_id=doc["id"], replayed=replayed)
        else:
            # 5xx other than 503: the contract's "outcome unknown" (and a judged violation).
            unknown = resp.status_code >= 500 and resp.status_code != 503
            code = _error_code(resp)
            self.complete(inv, OpType.UNKNOWN if unknown else OpType.FAIL,
                          status=resp.status_code, error=code)  # fmt: skip
        return resp


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _error_code(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error"))
    except (ValueError, AttributeError):
        return resp.text[:100]


@dataclass(frozen=True, slots=True)
class History:
    ops: tuple[Op, ...]

    @classmethod
    def read(cls, path: Path) -> History:
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls(tuple(Op.from_json(line) for line in lines if line.strip()))

    def calls(self) -> list[Call]:
        done = {op.call: op for op in self.ops if op.type is not OpType.INVOKE}
        return [Call(op, done.get(op.call)) for op in self.ops if op.type is OpType.INVOKE]

    def accepted(self) -> dict[str, str]:
        """key -> the order id of its first 201 (as load.LoadResult.accepted)."""
        out: dict[str, str] = {}
        for op in self.ops:
            if op.type is OpType.OK and op.key is not None and op.order_id is not None:
                out.setdefault(op.key, op.order_id)
        return out

    def order_ids(self) -> set[str]:
        return {op.order_id for op in self.ops if op.order_id is not None}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the system ended with: the audit's snapshot (log and services) and, for every
    order the history or its keys lead to, what GET /orders/{id} says (its status, or why
    there was none)."""

    snapshot: Snapshot
    gateway: Mapping[str, str]


def observe(
    gateway_url: str,
    log_at: Path | SagaLogSettings,
    addresses: ServiceAddresses,
    history: History,
    *,
    settle_s: float = 60.0,
) -> Outcome:
    """Wait (up to `settle_s`) for running sagas to finish, then read the final state of
    the log (a file, or where its settings say) and the services."""
    wait_until_settled(log_at, settle_s)
    snapshot = read_snapshot(log_at, addresses)
    keys = {op.key for op in history.ops if op.key is not None}
    ids = history.order_ids() | {s.id for s in snapshot.sagas if s.idempotency_key in keys}
    answers: dict[str, str] = {}
    with httpx.Client(base_url=gateway_url, timeout=10.0) as http:
        for order_id in sorted(ids):
            try:
                resp = http.get(f"/orders/{order_id}")
            except httpx.TransportError as exc:
                answers[order_id] = f"no answer ({_describe(exc)})"
                continue
            ok = resp.status_code == 200
            answers[order_id] = resp.json()["status"] if ok else f"HTTP {resp.status_code}"
    return Outcome(snapshot, answers)


@dataclass(frozen=True, slots=True)
class Verdict:
    violations: tuple[str, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self, limit: int = 40) -> str:
        lines = [f"{len(self.violations)} violations; {dict(self.counts)}"]
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)


def judge(
    history: History,
    final: Outcome,
    *,
    require_ack: bool = True,
    others_allowed: bool = False,
) -> Verdict:
    """Every violation of what the clients were promised, given what they saw:

    - every call completed, within its deadline (nothing hangs);
    - no answer but 201 or 503 (valid orders: no 4xx; no 5xx but 503);
    - one key, one order: every 201 for a key names the same order, the one the log holds
      for that key, with the items and total the client sent; a key whose every call
      failed definitely created nothing;
    - every order a key led to (acknowledged, or after an unknown outcome) ends CONFIRMED
      or CANCELLED, and the gateway and the log agree;
    - every invariant of the contract's audit (orders/audit.py): each effect once, stock
      and money conserved, compensation complete;
    - with `require_ack`, every key was acknowledged in the end (clients retried it);
      unless `others_allowed`, the log holds no order that no key of the history explains.
    """
    v: list[str] = []
    calls = history.calls()
    by_key: defaultdict[str, list[Call]] = defaultdict(list)
    for c in calls:
        _check_call(c, v)
        if c.invoke.key is not None:
            by_key[c.invoke.key].append(c)
    sagas_by_key: defaultdict[str, list[SagaRow]] = defaultdict(list)
    for s in final.snapshot.sagas:
        if s.idempotency_key is not None:
            sagas_by_key[s.idempotency_key].append(s)
    for key, key_calls in sorted(by_key.items()):
        _check_key(key, key_calls, sagas_by_key.get(key, []), final.gateway, v, require_ack)
    acked = history.order_ids()
    sagas = {s.id for s in final.snapshot.sagas}
    v += [f"order {o}: acknowledged, but the log has no such order" for o in sorted(acked - sagas)]
    if not others_allowed:
        for s in final.snapshot.sagas:
            if s.idempotency_key not in by_key and s.id not in acked:
                v.append(f"order {s.id}: in the log, but no client asked for it")
    report = audit(final.snapshot)
    v += [f"audit {violation}" for violation in report.violations]
    done = [c.done for c in calls if c.done is not None]
    counts = Counter(op.type.value for op in done)
    counts.update({"calls": len(calls), "keys": len(by_key), "orders": report.orders})
    counts.update({f"order {k}": n for k, n in report.by_status.items()})
    counts.update(f"HTTP {op.status}" for op in done if op.status is not None)
    return Verdict(tuple(v), dict(counts))


def _check_call(c: Call, v: list[str]) -> None:
    inv, done = c.invoke, c.done
    name = f"call {inv.call} ({inv.process}, key {inv.key})"
    if done is None:
        v.append(f"{name}: never completed: a client hung")
        return
    took = done.at - inv.at
    if inv.deadline_s is not None and took > inv.deadline_s + SLACK_S:
        v.append(f"{name}: took {took:.1f}s, past its {inv.deadline_s:.1f}s deadline")
    if done.status is not None and done.status not in (201, 503):
        v.append(f"{name}: answered HTTP {done.status} {done.error}")


def _check_key(
    key: str,
    calls: Sequence[Call],
    sagas: Sequence[SagaRow],
    gateway: Mapping[str, str],
    v: list[str],
    require_ack: bool,
) -> None:
    done = [c.done for c in calls if c.done is not None]
    acked = {op.order_id for op in done if op.type is OpType.OK and op.order_id is not None}
    if len(acked) > 1:
        v.append(f"key {key}: answered with {len(acked)} order ids {sorted(acked)}")
    if len(sagas) > 1:
        v.append(f"key {key}: {len(sagas)} orders in the log")
    saga = sagas[0] if sagas else None
    for order_id in sorted(acked):
        if saga is not None and saga.id != order_id:
            v.append(f"key {key}: the client was told order {order_id}, the log has {saga.id}")
    if saga is None:
        if acked:
            v.append(f"key {key}: acknowledged as {sorted(acked)}, the log has no order for it")
        if require_ack and not acked:
            last = f"{done[-1].type} {done[-1].error}" if done else "nothing"
            v.append(f"key {key}: never acknowledged (last: {last})")
        return
    if all(c.done is not None and c.done.type is OpType.FAIL for c in calls):
        v.append(f"key {key}: every call failed definitely, yet order {saga.id} exists")
    if require_ack and not acked:
        v.append(f"key {key}: order {saga.id} exists but was never acknowledged")
    _check_body(key, saga, [c.invoke.body for c in calls], v)
    expected = LOG_STATUS.get(saga.status)
    seen = gateway.get(saga.id, "not asked")
    if expected is None:
        v.append(f"key {key}: order {saga.id} never ended: the log says {saga.status.value}")
    elif seen != expected:
        v.append(f"key {key}: order {saga.id} is {expected} in the log, the gateway says {seen}")


def _check_body(key: str, saga: SagaRow, bodies: Iterable[Body | None], v: list[str]) -> None:
    for body in bodies:
        if body is None:
            continue
        try:
            asked = parse_order(json.dumps(body).encode())
        except ApiError:
            continue  # an invalid body: its 400 is judged with its call
        items = tuple(sorted((i.product_id, i.quantity) for i in asked.items))
        if items != tuple(sorted(saga.items)) or asked.total_cents != saga.total_cents:
            v.append(
                f"key {key}: order {saga.id} holds {list(saga.items)} for {saga.total_cents}"
                f" cents, the client asked {list(items)} for {asked.total_cents}"
            )
            return
