"""`saga up`: the whole stack from one command; SIGTERM or Ctrl-C stops every child cleanly,
and a child that dies is started again."""

from __future__ import annotations

import functools
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.procs import SagaProcess, base_env, free_port
from tests.support.stack import http_ok, wait_terminal


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmd
    return found


@dataclass
class Up:
    proc: SagaProcess
    url: str


def dead(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def up_process(tmp_path: Path, port: int) -> SagaProcess:
    """`saga up` on its own free ports, the gateway on `port`; output in up.log. Ready
    when the gateway's /readyz answers, which needs every service."""
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path / "var"),
        HTTP_ADDR=f"127.0.0.1:{port}",
        ORDER_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
        PAYMENT_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
        INVENTORY_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
        RECOVERY_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        SAGA_LOG_FORMAT="text",
    )
    ready = functools.partial(http_ok, f"http://127.0.0.1:{port}/readyz")
    return SagaProcess(["up"], env, tmp_path / "up.log", ready)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    port = free_port()
    proc = up_process(tmp_path, port).start()
    yield Up(proc, f"http://127.0.0.1:{port}")
    if proc.running:
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_seed_examples_run_then_one_signal_stops_everything(up: Up, signum: int) -> None:
    with httpx.Client(base_url=up.url, timeout=10) as http:
        ok = http.post(
            "/orders",
            headers={"X-Idempotency-Key": "task-001"},
            json={"customer_id": "cust_123",
                  "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.00}]},
        )  # fmt: skip
        fail = http.post(
            "/orders",
            headers={"X-Idempotency-Key": "fail-001"},
            json={"customer_id": "cust_123",
                  "items": [{"product_id": "prod_1", "quantity": 1, "price": 600.00}]},
        )  # fmt: skip
        assert ok.status_code == fail.status_code == 201
        assert wait_terminal(http, ok.json()["id"])["status"] == "CONFIRMED"
        cancelled = wait_terminal(http, fail.json()["id"])
        assert (cancelled["status"], cancelled["reason"]) == ("CANCELLED", "payment_declined")
    kids = children(up.proc.pid)
    assert len(kids) == 5, kids  # three services, the gateway, the daemon
    up.proc.send_signal(signum)
    assert up.proc.wait(30) == 0
    assert all(dead(pid) for pid in kids), "every child stopped with the supervisor"


def test_a_child_that_dies_is_started_again(up: Up) -> None:
    gateway = [p for p, c in children(up.proc.pid).items() if c.endswith("saga gateway")]
    assert len(gateway) == 1
    os.kill(gateway[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        again = [p for p, c in children(up.proc.pid).items() if c.endswith("saga gateway")]
        if again and again[0] != gateway[0] and http_ok(up.url + "/healthz"):
            break
        assert time.monotonic() < deadline, "the gateway was not restarted"
        time.sleep(0.1)
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0


def test_a_child_that_cannot_start_stops_the_stack_with_its_error(tmp_path: Path) -> None:
    # Someone else holds the gateway's port: restarting the gateway would fail the same way
    # forever, so `saga up` says why once and stops, and leaves nothing running.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = up_process(tmp_path, taken.getsockname()[1]).start(wait=False)
        try:
            code = proc.wait(60)
        finally:
            proc.kill()
    output = proc.output()
    assert code == 2, output
    assert "cannot listen on" in output and "Address already in use" in output, output
    assert "gateway cannot start" in output and "stopping the stack" in output, output
    assert output.count("cannot listen on") == 1, "said once, not restarted"
    assert "Traceback" not in output
    assert not started_on(tmp_path / "var"), "the services were stopped with it"


def test_a_supervisor_killed_outright_takes_its_children_and_a_new_one_starts(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = up_process(tmp_path, port).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            placed = http.post("/orders", headers={"X-Idempotency-Key": "before"}, json=ORDER)
            assert placed.status_code == 201
        kids = children(first.pid)
        assert len(kids) == 5, kids
        first.kill()  # SIGKILL: the supervisor cannot stop anything itself
        deadline = time.monotonic() + 10
        while not all(dead(pid) for pid in kids):
            orphans = started_on(tmp_path / "var")
            assert time.monotonic() < deadline, f"orphans still running: {orphans}"
            time.sleep(0.05)
        # Same ports, same data: the new stack starts (no port held by an orphan) and
        # carries on from the log, the order placed before the kill included.
        second = up_process(tmp_path, port).start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert wait_terminal(http, placed.json()["id"])["status"] == "CONFIRMED"
            again = http.post("/orders", headers={"X-Idempotency-Key": "before"}, json=ORDER)
            assert again.json()["id"] == placed.json()["id"]
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for pid in started_on(tmp_path / "var"):
            os.kill(pid, signal.SIGKILL)


ORDER = {"customer_id": "cust_1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 5}]}


def started_on(data_dir: Path) -> list[int]:
    """Live processes whose environment names `data_dir`: the children of a `saga up`
    outlive it as orphans, so they are found by what they were given, not by parent."""
    marker = f"SAGA_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and not dead(int(entry.name)):
            found.append(int(entry.name))
    return found
