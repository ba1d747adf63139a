"""A red CI run explains itself: with DURABLE_SAGA_TEST_ARTIFACTS set (scripts/test sets
it), each failing test leaves failure.txt (its error and captured output) and a copy of
the log files of the processes it started; a passing test leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ARTIFACTS_VAR

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def child(tmp_path: Path):
    log = tmp_path / "data" / "gateway.log"
    log.parent.mkdir()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "print('gateway: cannot reach the payment service')"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield proc
    proc.wait()  # teardown: the log is complete only now


def test_red(child: subprocess.Popen[bytes]) -> None:
    print("printed by the test")
    assert 1 + 1 == 3


def test_green(tmp_path: Path) -> None:
    (tmp_path / "quiet.log").write_text("nothing wrong")
"""


def test_a_failing_test_leaves_its_error_output_and_process_logs(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_sample.py").write_text(textwrap.dedent(SUITE))
    artifacts = tmp_path / "artifacts"
    env = {
        **os.environ,
        ARTIFACTS_VAR: str(artifacts),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "basetemp"), "-q", str(suite)],
        cwd=suite, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout, done.stdout

    failed = artifacts / "failed"
    assert [p.name for p in failed.iterdir()] == ["test_sample.py_test_red"]
    folder = failed / "test_sample.py_test_red"
    failure = (folder / "failure.txt").read_text()
    assert "assert 1 + 1 == 3" in failure and "printed by the test" in failure, failure
    logs = sorted(p.relative_to(folder / "logs") for p in (folder / "logs").rglob("*.log"))
    assert logs == [Path("test_red0/data/gateway.log")], logs
    copied = (folder / "logs" / logs[0]).read_text()
    assert "cannot reach the payment service" in copied
