"""saga.children, the one process runner behind `saga up`, the benchmark stack and the
tests' real processes: a child that fails says why with the end of its log, one that is
never ready is killed, and what it costs is read from /proc."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path

import pytest

from saga.children import Child, ChildFailed, base_env


def python(tmp_path: Path, code: str) -> Child:
    return Child.spawn(
        "child", [sys.executable, "-c", code], base_env(), log_path=tmp_path / "child.log"
    )


def test_a_child_that_exits_before_it_is_ready_fails_with_its_log(tmp_path: Path) -> None:
    child = python(tmp_path, "import sys; print('cannot bind'); sys.exit(3)")
    with pytest.raises(ChildFailed, match=r"child exited with 3:\ncannot bind"):
        child.wait_ready(lambda: False, timeout_s=30)


def test_a_child_never_ready_is_killed_and_fails_with_its_log(tmp_path: Path) -> None:
    child = python(tmp_path, "import time; print('starting', flush=True); time.sleep(60)")
    with pytest.raises(ChildFailed, match=r"child was not ready in 1s:\n(.|\n)*starting"):
        child.wait_ready(lambda: (tmp_path / "child.log").read_text() == "x", timeout_s=1)
    assert not child.alive
    assert child.returncode == -signal.SIGKILL


def test_ready_returns_and_cost_is_read_while_alive(tmp_path: Path) -> None:
    child = python(tmp_path, "import time; print('up', flush=True); time.sleep(60)")
    child.wait_ready(lambda: "up" in child.output())
    try:
        assert (child.rss_bytes() or 0) > 1_000_000
        assert child.cpu_seconds() >= 0
    finally:
        assert child.kill() == -signal.SIGKILL
    assert child.rss_bytes() is None
    assert math.isnan(child.cpu_seconds())


def test_output_appends_across_runs_and_saga_children_are_named(tmp_path: Path) -> None:
    log = tmp_path / "saga.log"
    for _ in range(2):
        child = Child.saga(["--help"], base_env(), log_path=log, cwd=tmp_path)
        assert child.wait(60) == 0, child.output()
    assert child.name == "saga --help"
    assert child.output().count("Usage:") == 2


def test_base_env_drops_the_project_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_DATA_DIR", "/somewhere")
    monkeypatch.setenv("HTTP_ADDR", "0.0.0.0:80")
    monkeypatch.setenv("ORDER_SERVICE_ADDR", "elsewhere:1")
    monkeypatch.setenv("HOME_OF_SOMETHING_ELSE", "kept")
    env = base_env(HTTP_ADDR="127.0.0.1:1234")
    assert "SAGA_DATA_DIR" not in env and "ORDER_SERVICE_ADDR" not in env
    assert env["HTTP_ADDR"] == "127.0.0.1:1234"
    assert env["HOME_OF_SOMETHING_ELSE"] == "kept"
    assert env["PYTHONUNBUFFERED"] == "1"
