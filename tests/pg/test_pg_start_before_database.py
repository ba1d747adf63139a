"""A gateway and a recovery daemon started before their PostgreSQL server (a server of the
test's own): both start and wait; meanwhile the gateway is alive, not ready, and answers
503 `unavailable`; once the server starts, neither is restarted, orders succeed, a saga
its gateway died on is finished by the daemon, nothing is lost. The outage is one WARNING
line and one INFO line in each process's JSON log, never a traceback or the password.

A database that refuses the program (no such database) is no outage: one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from engine.saga_log import SagaFilter
from tests.support.pg_server import PgServer
from tests.support.stack import Stack, wait_for, wait_terminal

BODY = {"customer_id": "c1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 5.0}]}
SECRET = "s3cret-pw"  # trust auth ignores it; it must never reach a log or an answer


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET}@{host}"


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _outage_lines(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = _records(path)
    warnings = [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
    # Nothing else is worth a WARNING in these runs but the armed crash point.
    down = [r for r in warnings if "crash point armed" not in r["message"]]
    up = [r for r in records if r["level"] == "INFO" and "available again" in r["message"]]
    return down, up


def _told(path: Path, which: int) -> bool:
    """Both outages' WARNINGs (which=0) or INFOs (which=1) are in the log at `path`."""
    return len(_outage_lines(path)[which]) == 2


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_gateway_and_daemon_started_before_the_database(tmp_path: Path) -> None:
    """Also the outage's log: each process's one WARNING (not one per request that met
    the outage) and one INFO."""
    with PgServer.create(tmp_path, start=False) as pg:
        url = _with_password(pg.url())
        stack = Stack.create(
            tmp_path, SAGA_DATABASE_URL=url, SAGA_LEASE_S="2", SAGA_LOG_FORMAT="json"
        )
        try:
            stack.start_services()
            # The gateway dies right after the first step's intent is durable (with the saga
            # itself): a saga that only the daemon (started before the database, too) can
            # finish.
            gateway = stack.start_gateway(SAGA_ENV="test", SAGA_CRASH_AT="after_intent")
            daemon = stack.recovery()
            with httpx.Client(base_url=stack.url, timeout=30) as client:
                assert client.get("/healthz").status_code == 200
                ready = client.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["error"] == "not_ready"
                assert f"127.0.0.1:{pg.port}" in ready.json()["checks"]["saga_log"]
                assert SECRET not in ready.text
                down = client.post("/orders", json=BODY, headers={"Idempotency-Key": "a"})
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "unavailable"
                scraped = client.get("/metrics")  # a scrape still works, and shows the 503
                assert scraped.status_code == 200, scraped.text
                refused = [
                    line
                    for line in scraped.text.splitlines()
                    if line.startswith("saga_http_requests_total") and 'status="503"' in line
                ]
                assert refused, scraped.text
                read = client.get("/orders/ord_missing")

                assert read.status_code == 503, read.text
                assert read.json()["error"] == "unavailable"

                pg.start()
                wait_for(lambda: _ready(stack.url), within_s=60, what="gateway never ready")
                # Whatever answer comes before the crash point is one the contract allows
                # (a dead gateway is no excuse for a 500), or none: the first step's intent
                # is durable with the saga, so the gateway may die before it answers. The
                # saga is durable either way.
                try:
                    with_crash = client.post("/orders", json=BODY, headers={"Idempotency-Key": "a"})
                except httpx.TransportError:
                    pass
                else:
                    assert with_crash.status_code in (201, 503), with_crash.text
            wait_for(lambda: not gateway.running, within_s=30, what="crash point not reached")
            with stack.shared_log() as log:
                # No gateway runs now: only the daemon can finish the saga it died on.
                def crashed_finished() -> bool:
                    page = log.list_sagas_sync(SagaFilter(), limit=10)
                    return len(page.items) == 1 and page.items[0].status.finished

                wait_for(crashed_finished, within_s=60, what="the daemon never finished it")
            # A gateway started again (no crash point) takes new orders at once.
            restarted = stack.start_gateway()
            with httpx.Client(base_url=stack.url, timeout=30) as client:
                again = client.post("/orders", json=BODY, headers={"Idempotency-Key": "b"})
                assert again.status_code == 201, again.text
                assert wait_terminal(client, again.json()["id"], within_s=60)["status"] in (
                    "CONFIRMED",
                )
            with stack.shared_log() as log:

                def all_finished() -> bool:
                    page = log.list_sagas_sync(SagaFilter(), limit=10)
                    return len(page.items) == 2 and all(s.status.finished for s in page.items)

                wait_for(all_finished, within_s=60, what="the daemon left a saga unfinished")
            assert daemon.running
            report = stack.audit(wait_s=30)
            assert report.ok, report
            assert report.orders == 2

            # A second outage, of a running gateway and daemon: asyncpg's pool retries its
            # connections meanwhile (and would log a traceback each time).
            logs = (stack.data / "gateway.log", stack.data / "recovery.log")
            pg.kill()
            for path in logs:
                wait_for(partial(_told, path, 0), 60, f"{path}: no WARNING")
            pg.start()
            for path in logs:
                wait_for(partial(_told, path, 1), 60, f"{path}: no INFO")
            assert restarted.running and daemon.running, "the outage ended neither"
        finally:
            stack.close()
        for path in logs:
            text = path.read_text()
            assert "Traceback" not in text, text[-3000:]
            assert SECRET not in text
            down_lines, up_lines = _outage_lines(path)
            assert len(down_lines) == 2, (path, down_lines)  # one per outage, however long
            assert all(f"127.0.0.1:{pg.port}" in line["message"] for line in down_lines)
            assert len(up_lines) == 2, (path, up_lines)


def test_no_such_database_is_one_line_and_exit_2(tmp_path: Path, pg_url: str) -> None:
    bad = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
    env = {**os.environ, "SAGA_DATABASE_URL": _with_password(bad), "HTTP_ADDR": "127.0.0.1:0"}
    for command in (["gateway"], ["recovery"]):
        done = subprocess.run(
            [sys.executable, "-m", "saga", *command],
            env={**env, "RECOVERY_METRICS_ADDR": "127.0.0.1:0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("saga: error:")]
        assert len(errors) == 1, done.stderr
        assert "no_such_database_here" in errors[0]
        assert "Traceback" not in done.stderr
        assert SECRET not in done.stderr


def test_a_database_that_turns_out_missing_once_up_ends_the_wait(tmp_path: Path) -> None:
    """Waiting covers a server that does not answer; once it answers that the database
    does not exist, the gateway and the daemon stop with one line and exit 2, as at a
    normal start."""
    with PgServer.create(tmp_path, start=False) as pg:
        url = _with_password(pg.url("no_such_db"))
        stack = Stack.create(tmp_path, SAGA_DATABASE_URL=url)
        try:
            gateway = stack.start_gateway()
            daemon = stack.recovery()
            assert httpx.get(stack.url + "/readyz", timeout=10).status_code == 503
            pg.start()
            for proc in (gateway, daemon):
                assert proc.wait(timeout=60) == 2, proc.output()
                out = proc.output()
                errors = [line for line in out.splitlines() if line.startswith("saga: error:")]
                assert len(errors) == 1, out
                assert "no_such_db" in errors[0]
                assert "draining" not in out  # it took nothing: nothing drains
                assert "Traceback" not in out
                assert SECRET not in out
        finally:
            stack.close()
