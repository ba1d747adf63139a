"""`saga service NAME` as a real process: the serving line, a clean SIGTERM, and one clear
line (no traceback, non-zero exit) for every mistake a user can make."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import base_env, free_port, grpc_serving, start_service

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a `saga` command that is expected to stop on its own (here: to fail)."""
    return subprocess.run(
        [sys.executable, "-m", "saga", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("saga: error: ")
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("name", ["order", "payment", "inventory"])
def test_serves_until_sigterm_then_exits_0(tmp_path: Path, name: str) -> None:
    port = free_port()
    svc = start_service(name, tmp_path / "data", port)
    with svc:
        assert grpc_serving(svc.address)
        assert svc.terminate() == 0
    line = f"{name} serving on 127.0.0.1:{port} (ledger {tmp_path / 'data' / name}.db, metrics on"
    assert line in svc.output()
    assert "Traceback" not in svc.output()
    assert (tmp_path / "data" / f"{name}.db").exists()


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(SAGA_DATA_DIR=str(tmp_path), INVENTORY_SERVICE_ADDR=f"127.0.0.1:{port}")
        done = run_cli("service", "inventory", env=env, cwd=tmp_path)
    assert_one_clear_line(done, f"127.0.0.1:{port}", "in use")


def test_a_second_service_on_the_same_port_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    with start_service("payment", tmp_path / "a", port) as first:
        env = base_env(SAGA_DATA_DIR=str(tmp_path / "b"), PAYMENT_SERVICE_ADDR=f"127.0.0.1:{port}")
        done = run_cli("service", "payment", env=env, cwd=tmp_path)
        assert_one_clear_line(done, "in use")
        assert first.running


def test_a_corrupt_ledger_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "payment.db").write_bytes(b"not a database at all " * 200)
    env = base_env(SAGA_DATA_DIR=str(tmp_path), PAYMENT_SERVICE_ADDR=f"127.0.0.1:{free_port()}")
    done = run_cli("service", "payment", env=env, cwd=tmp_path)
    assert_one_clear_line(done, "payment.db", "not a SQLite database")


def test_an_unusable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the data folder should be")
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path / "blocker" / "data"),
        ORDER_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
    )
    done = run_cli("service", "order", env=env, cwd=tmp_path)
    assert_one_clear_line(done, "order.db")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"INVENTORY_SEED_STOCK": "prod_1=lots"}, "INVENTORY_SEED_STOCK"),
        ({"INVENTORY_SERVICE_ADDR": "localhost"}, "INVENTORY_SERVICE_ADDR"),
        ({"SAGA_FAULTS": "Reserve:before:0.5"}, "SAGA_ENV is not 'test'"),
        ({"SAGA_ENV": "test", "SAGA_FAULTS": "Reserve:never:1"}, "SAGA_FAULTS"),
        ({"SAGA_LOG_LEVEL": "loud"}, "SAGA_LOG_LEVEL"),
        ({"SAGA_LOG_FORMAT": "xml"}, "SAGA_LOG_FORMAT"),
        ({"INVENTORY_DATABASE_URL": "mysql://u:secret@db/x"}, "INVENTORY_DATABASE_URL"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    done = run_cli(
        "service", "inventory", env=base_env(SAGA_DATA_DIR=str(tmp_path), **env), cwd=tmp_path
    )
    assert_one_clear_line(done, fragment)
    assert "secret" not in done.stderr
    assert not (tmp_path / "inventory.db").exists(), "nothing is created before settings pass"


def test_a_database_that_refuses_the_service_is_one_clear_line(tmp_path: Path) -> None:
    # The server answers, but the database is not there: waiting would not help.
    url = "postgresql://postgres:secret@127.0.0.1:5432/no_such_database"
    env = base_env(
        SAGA_DATA_DIR=str(tmp_path),
        ORDER_SERVICE_ADDR=f"127.0.0.1:{free_port()}",
        ORDER_DATABASE_URL=url,
    )
    done = run_cli("service", "order", env=env, cwd=tmp_path)
    assert_one_clear_line(done, "no_such_database", "does not exist")
    assert "secret" not in done.stderr


def test_test_mode_warns_loudly(tmp_path: Path) -> None:
    svc = start_service(
        "payment", tmp_path, free_port(), {"SAGA_ENV": "test", "SAGA_FAULTS": "Charge:before:0.1"}
    )
    with svc:
        assert svc.terminate() == 0
    assert "WARNING" in svc.output()
    assert "FAULT INJECTION IS ON" in svc.output()
