"""The peers of `bench peers`, each started on the same three services: this project's
stack, DBOS (bench/peer_dbos.py) and Restate (its server from the npm package
`@restatedev/restate-server`, and bench/peer_restate.py as its service endpoint); and,
for each, how to read what it recorded once the load is over: its orders by how they
ended, and the time of its last terminal write."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from bench.errors import BenchError
from bench.measure import fetch_orders, wait_settled
from bench.stack import BenchStack
from saga.children import Child
from saga.probes import free_port, http_ok, tcp_open

__all__ = ["Orchestrator", "find_restate", "start_dbos", "start_restate", "start_saga"]

_READY_S: Final = 60.0


@dataclass
class Orchestrator:
    """One peer, running: where its load goes, its processes, how it acknowledges."""

    port: int
    procs: dict[str, Child]
    state: Callable[[], tuple[dict[str, int], int | None]]  # ended by status, last write ms
    pending: Callable[[dict[str, int]], bool]  # whether some order is still on its way
    accepted_status: int = 201
    path: str = "/orders"
    key_header: str = "X-Idempotency-Key"
    owned: list[Child] = field(default_factory=list)  # started here, killed by `close`
    wait: Callable[[float], bool] | None = None  # the peer's own "nothing pending" wait
    # The kill -9 half: the orchestrator's process (SIGKILLed mid-load) by name, how to
    # start it again on the same port and data, and every id it recorded by status.
    victim: str = ""
    restart: Callable[[], Child] | None = None
    ids: Callable[[], dict[str, str]] | None = None
    terminal: frozenset[str] = frozenset()

    def kill_and_restart(self) -> None:
        """SIGKILL the orchestrator's process, then start it again and wait until ready."""
        if self.restart is None:
            raise BenchError("this peer cannot be restarted")
        self.procs[self.victim].kill()
        child = self.restart()
        self.procs[self.victim] = child
        self.owned = [c for c in self.owned if c.alive] + [child]

    def settled(self, accepted: int, timeout_s: float) -> bool:
        """Wait until every accepted order is recorded and none is on its way."""
        if self.wait is not None:
            return self.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            by, _ = self.state()
            if sum(by.values()) >= accepted and not self.pending(by):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)

    def close(self) -> None:
        for child in self.owned:
            child.kill()


def _spawn(stack: BenchStack, name: str, argv: list[str], env: dict[str, str]) -> Child:
    return Child.spawn(name, argv, env, log_path=stack.root / f"{name}.log", cwd=stack.root)


@contextlib.contextmanager
def _killed_on_error(*children: Child) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for child in children:
            child.kill()
        raise


# ---- this project --------------------------------------------------------------------------


def start_saga(stack: BenchStack) -> Orchestrator:
    """`saga gateway`, `saga recovery` and a private Redis (the stack must have Redis)."""
    stack.start_gateway()
    stack.start_recovery()

    def state() -> tuple[dict[str, int], int | None]:
        ends = fetch_orders(stack.url)
        done = [e.updated_ms for e in ends.values() if e.status != "PENDING"]
        return dict(Counter(e.status for e in ends.values())), max(done) if done else None

    return Orchestrator(
        stack.port,
        stack.processes(),
        state,
        lambda by: "PENDING" in by,
        # The gateway says itself when nothing is pending (one cheap query a quarter second).
        wait=lambda timeout_s: wait_settled(stack.url, timeout_s),
        victim="gateway",
        restart=stack.start_gateway,  # same port and log; the daemon finishes orphans
        ids=lambda: {k: e.status for k, e in fetch_orders(stack.url).items()},
        terminal=frozenset({"CONFIRMED", "CANCELLED"}),
    )


# ---- DBOS ----------------------------------------------------------------------------------


def _dbos_state(db: Path) -> tuple[dict[str, int], int | None]:
    """Workflows by status, and the last write of any (ms): the workflow's own status
    update, or its last step's completion, which DBOS records in milliseconds."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        by = dict(conn.execute("SELECT status, count(*) FROM workflow_status GROUP BY 1"))
        last_status = conn.execute("SELECT max(updated_at) FROM workflow_status").fetchone()[0]
        last_step = conn.execute(
            "SELECT max(completed_at_epoch_ms) FROM operation_outputs"
        ).fetchone()[0]
    lasts = [int(x) for x in (last_status, last_step) if x is not None]
    return {str(k): int(v) for k, v in by.items()}, max(lasts) if lasts else None


def start_dbos(stack: BenchStack) -> Orchestrator:
    port = free_port()
    db = stack.root / "dbos.sqlite"
    env = {**stack.env, "HTTP_ADDR": f"127.0.0.1:{port}", "DBOS_SQLITE": str(db)}

    def start() -> Child:
        app = _spawn(stack, "dbos", [sys.executable, "-m", "bench.peer_dbos"], env)
        with _killed_on_error(app):
            app.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), _READY_S)
        return app

    app = start()
    return Orchestrator(
        port,
        {**stack.processes(), "dbos": app},
        lambda: _dbos_state(db),
        lambda by: any(s in by for s in ("PENDING", "ENQUEUED")),
        owned=[app],
        victim="dbos",
        restart=start,  # DBOS recovers its pending workflows when it starts
        ids=lambda: _dbos_ids(db),
        terminal=frozenset({"SUCCESS", "ERROR"}),
    )


def _dbos_ids(db: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT workflow_uuid, status FROM workflow_status").fetchall()
    return {str(k): str(v) for k, v in rows}


# ---- Restate -------------------------------------------------------------------------------


def find_restate(given: str | None) -> tuple[str | None, str]:
    """The restate-server binary (`given`, else on PATH) and how it was found; or None and
    why, in one line."""
    import importlib.util

    if importlib.util.find_spec("restate") is None:
        return None, "the Restate SDK is not installed (pip install -e '.[bench]')"
    path = given or shutil.which("restate-server")
    if path is None or not Path(path).exists():
        return None, (
            "restate-server is not on PATH (npm install @restatedev/restate-server, then "
            "--restate-server node_modules/.bin/restate-server)"
        )
    binary = _native(Path(path))
    return str(binary), f"restate-server at {binary}"


def _native(path: Path) -> Path:
    """The server itself for npm's launcher (a node script that starts the platform's
    binary as its child, which a SIGKILL of the launcher would leave running, and whose
    CPU is not the server's): the binary of the platform package beside it."""
    resolved = path.resolve()
    with open(resolved, "rb") as f:
        if f.read(2) != b"#!":
            return resolved  # already a binary
    for folder in resolved.parents:
        if folder.name == "node_modules":
            found = sorted(folder.glob("@restatedev/restate-server-linux-*/bin/restate-server"))
            if found:
                return found[0]
    return resolved


def _post(url: str, doc: object, timeout_s: float = 30.0) -> object:
    req = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise BenchError(f"Restate at {url} answered {exc.code}: {detail}") from exc


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _restate_state(admin: str) -> tuple[dict[str, int], int | None]:
    """Invocations by status (a completed one by its result), and the last completion."""
    sql = (
        "SELECT status, completion_result, count(*) AS n, max(completed_at) AS last "
        "FROM sys_invocation GROUP BY status, completion_result"
    )
    doc = _post(f"{admin}/query", {"query": sql})
    assert isinstance(doc, dict)
    by: dict[str, int] = {}
    lasts: list[int] = []
    for row in doc["rows"]:
        status = row["status"] if row["status"] != "completed" else row["completion_result"]
        by[str(status)] = by.get(str(status), 0) + int(row["n"])
        if row.get("last"):
            lasts.append(_ms(str(row["last"])))
    return by, max(lasts) if lasts else None


def start_restate(stack: BenchStack, binary: str) -> Orchestrator:
    """A single-node Restate server with its defaults (but its ports and folder) and the
    service endpoint, registered with it."""
    ingress, admin, fabric, endpoint = free_port(), free_port(), free_port(), free_port()
    server_env = {
        **stack.env,
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{fabric}",
        "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{fabric}",
        "RESTATE_LISTEN_MODE": "tcp",
        "RESTATE_DISABLE_TELEMETRY": "true",
        "RESTATE_LOG_FILTER": "warn",
    }
    argv = [binary, "--no-logo", "--base-dir", str(stack.root / "restate")]

    def start_server() -> Child:
        server = _spawn(stack, "restate-server", argv, server_env)
        with _killed_on_error(server):
            server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{admin}/health"), _READY_S)
            ingress_health = f"http://127.0.0.1:{ingress}/restate/health"
            server.wait_ready(lambda: http_ok(ingress_health), _READY_S)
        return server

    server = _spawn(stack, "restate-server", argv, server_env)
    app_env = {**stack.env, "HTTP_ADDR": f"127.0.0.1:{endpoint}"}
    app = _spawn(stack, "restate-endpoint", [sys.executable, "-m", "bench.peer_restate"], app_env)
    with _killed_on_error(server, app):
        server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{admin}/health"), _READY_S)
        server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{ingress}/restate/health"), _READY_S)
        app.wait_ready(lambda: tcp_open("127.0.0.1", endpoint), _READY_S)
        registration = {"uri": f"http://127.0.0.1:{endpoint}", "use_http_11": True}
        _post(f"http://127.0.0.1:{admin}/deployments", registration)
    base = f"http://127.0.0.1:{admin}"
    return Orchestrator(
        ingress,
        {**stack.processes(), "restate-server": server, "restate-endpoint": app},
        lambda: _restate_state(base),
        lambda by: any(s not in ("success", "failure") for s in by),
        accepted_status=202,
        path="/OrderSaga/order/send",
        key_header="idempotency-key",
        owned=[server, app],
        victim="restate-server",
        restart=start_server,  # same folder: its log and state survive the kill
        ids=lambda: _restate_ids(base),
        terminal=frozenset({"success", "failure"}),
    )


def _restate_ids(admin: str) -> dict[str, str]:
    """Every invocation by id: its status, a completed one by its result."""
    doc = _post(
        f"{admin}/query", {"query": "SELECT id, status, completion_result FROM sys_invocation"}
    )
    assert isinstance(doc, dict)
    return {
        str(r["id"]): str(r["status"] if r["status"] != "completed" else r["completion_result"])
        for r in doc["rows"]
    }
