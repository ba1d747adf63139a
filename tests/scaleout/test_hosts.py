"""The test hosts and the test's own PostgreSQL server, tested themselves: what the
scale-out fault tests build on must do what they rely on. A process on one host reaches a
server on another; a partition really drops (and heals); a host's processes really die;
the server keeps what it committed through kill -9; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from saga.children import Child, saga_argv
from tests.support.netns import NS_PREFIX, Host, Network, require_hosts, sweep_leftovers
from tests.support.pg_server import PgServer
from tests.support.procs import free_port, start_service

# Connect from inside a host, and say how it went: ok, refused, or timeout.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except ConnectionRefusedError:
    print("refused")
except (TimeoutError, socket.timeout):
    print("timeout")
"""


def connect(host: Host, ip: str, port: int, timeout_s: float = 1.0) -> str:
    argv = [sys.executable, "-c", CONNECT, ip, str(port), str(timeout_s)]
    return host.run(argv).stdout.strip()


def http_server(host: Host, tmp_path: Path) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", host.ip, str(port)]
    child = Child.spawn("http.server", host.wrap(argv), os.environ, log_path=tmp_path / "http.log")
    child.wait_ready(lambda: connect(host, host.ip, port) == "ok", timeout_s=20)
    return child, port


def test_a_process_on_one_host_reaches_a_service_on_another(
    network: Network, tmp_path: Path
) -> None:
    a, b = network.add_host("a"), network.add_host("b")
    assert a.ip != b.ip and a.ip != network.ip
    port = free_port()
    inv = start_service("inventory", tmp_path / "b", port, host=b.ip, on=b)
    probe = saga_argv(["probe", "grpc", f"{b.ip}:{port}"])
    assert a.run(probe, check=False).returncode == 0, "a reaches b's service across the bridge"
    # Loopback is each host's own: b's service is not on a's 127.0.0.1.
    assert connect(a, "127.0.0.1", port) == "refused"
    # The process in the namespace is the service itself, not a wrapper around it.
    assert b.pids() == [inv.pid]
    assert b.kill_all() == [inv.pid]
    assert inv.wait(5) == -9
    assert a.run(probe, check=False).returncode == 1, "a dead host serves nothing"


def test_a_partition_drops_both_ways_and_heals(network: Network, tmp_path: Path) -> None:
    a, b = network.add_host("a"), network.add_host("b")
    _server, port = http_server(b, tmp_path)
    assert connect(a, b.ip, port) == "ok"
    a.partition(b.ip)
    assert connect(a, b.ip, port) == "timeout", "dropped, not refused: a dead link"
    assert connect(b, a.ip, port) == "timeout", "nothing comes in from b either"
    assert connect(a, network.ip, 1) == "refused", "only b is cut off"
    assert a.dropped() > 0
    a.heal()
    assert connect(a, b.ip, port) == "ok"
    # Only one port: the others of that address still answer (here: refuse).
    a.partition(b.ip, port)
    assert connect(a, b.ip, port) == "timeout"
    assert connect(a, b.ip, port + 1) == "refused"
    a.heal(b.ip, port)
    assert connect(a, b.ip, port) == "ok"


# Commits one row per transaction until the server goes away, printing each id once its
# COMMIT has returned.
WRITER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], timeout=10)
    for i in range(1_000_000):
        await conn.execute("INSERT INTO acked VALUES ($1)", i)
        print(i, flush=True)
asyncio.run(main())
"""


def test_the_server_keeps_what_it_committed_through_kill_9(network: Network, pg: PgServer) -> None:
    a = network.add_host("a")
    pg.execute("CREATE TABLE acked (id int PRIMARY KEY)")
    writer = subprocess.Popen(
        a.wrap([sys.executable, "-c", WRITER, pg.url(host=network.ip)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert writer.stdout is not None
    acked = [int(writer.stdout.readline()) for _ in range(200)]  # mid-stream, whatever speed
    pg.kill()
    acked += [int(line) for line in writer.stdout.read().split()]
    assert writer.wait(30) != 0, "the writer lost its server"
    pg.start()
    stored = {row[0] for row in pg.fetch("SELECT id FROM acked")}
    assert set(acked) <= stored, f"lost {sorted(set(acked) - stored)[:10]}"
    assert len(stored) - len(acked) <= 1, "at most the one whose COMMIT got no answer"


def test_a_paused_server_answers_nothing_until_it_resumes(network: Network, pg: PgServer) -> None:
    a = network.add_host("a")
    query = [sys.executable, "-c", "import asyncio, sys, asyncpg\n"
             "async def main():\n"
             "    conn = await asyncpg.connect(sys.argv[1], timeout=2)\n"
             "    print(await conn.fetchval('SELECT 41 + 1'))\n"
             "asyncio.run(main())", pg.url(host=network.ip)]  # fmt: skip
    assert a.run(query).stdout.strip() == "42"
    pg.pause()
    try:
        paused = a.run(query, check=False)
        assert paused.returncode != 0 and "Timeout" in paused.stderr, paused.stderr[-300:]
    finally:
        pg.resume()
    assert a.run(query).stdout.strip() == "42"


def test_everything_is_removed_and_leftovers_are_swept() -> None:
    with Network.create() as net:
        host = net.add_host("a")
        names = (host.ns, net.bridge)
        Child.spawn("sleep", host.wrap(["sleep", "600"]), os.environ)
    assert host.ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True).stdout  # fmt: skip
    assert subprocess.run(["ip", "link", "show", names[1]], capture_output=True).returncode != 0
    # A namespace of a run that died (its process id is gone) is removed by the next run.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{NS_PREFIX}{gone.pid:x}-1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    sweep_leftovers()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert stale not in listed


def test_without_root_the_test_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match=r"^test hosts need root \(") as failed:
        require_hosts()
    assert "\n" not in str(failed.value)
