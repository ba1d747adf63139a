"""Real processes, real SIGKILL: for every crash point the engine lists, a process running
a saga kills itself there, a second process resumes it, and the participants show each
effect exactly once. Also many processes sharing one log file: group commit under
contention, and claims that never hand one saga to two owners."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import ACTIVE_STATUSES, SagaStatus
from engine.crashpoints import CRASH_POINTS, STEP_POINTS
from engine.saga_log import NewSaga, SagaFilter
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog
from tests.engine.world import World, definition

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("s0", "s1", "s2", "s3")
CASES = [
    (point, step) for point in CRASH_POINTS for step in (STEPS if point in STEP_POINTS else ("",))
]


def driver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.engine.crash_driver", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("refuse", ["", "s2"], ids=["success", "refused"])
@pytest.mark.parametrize(("point", "step"), CASES)
def test_killed_at_a_crash_point_then_resumed(
    tmp_path: Path, point: str, step: str, refuse: str
) -> None:
    log_path, world_path = tmp_path / "saga.db", tmp_path / "world.db"
    crash_at = f"{point}:{step}" if step else point
    env = {"PATH": "/usr/bin:/bin", "SAGA_ENV": "test", "SAGA_CRASH_AT": crash_at}
    first = driver("start", str(log_path), str(world_path), "saga-1", "--refuse", refuse, env=env)
    if first.returncode == 0:
        pytest.skip(f"{crash_at} is not on this path")  # e.g. compensation points on success
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = driver("resume", str(log_path), str(world_path), "saga-1", "--refuse", refuse)
    assert second.returncode == 0, second.stderr

    log = SqliteSagaLog.open(DbConfig(log_path))
    rec = log.get_sync("saga-1")
    log.close_sync()
    assert rec is not None
    expected = SagaStatus.COMPENSATED if refuse else SagaStatus.COMPLETED
    assert rec.status is expected
    world = World(world_path)
    world.check(definition(world), "saga-1", rec.status)


def test_crash_points_refuse_to_arm_outside_test_mode(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SAGA_CRASH_AT": "after_intent"}
    res = driver("start", str(tmp_path / "l.db"), str(tmp_path / "w.db"), "x", env=env)
    assert res.returncode != 0
    assert "SAGA_ENV is not 'test'" in res.stderr


def test_claims_from_many_processes_never_overlap(tmp_path: Path) -> None:
    log_path = tmp_path / "saga.db"
    log = SqliteSagaLog.open(DbConfig(log_path))

    async def fill() -> None:
        await asyncio.gather(
            *(
                log.create(NewSaga(f"s-{i}", "toy", b"{}"), owner=None, lease_expires_ms=0,
                           now_ms=1)
                for i in range(600)
            )
        )  # fmt: skip

    asyncio.run(fill())
    log.close_sync()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.engine.crash_driver", "claim", str(log_path),
             f"owner-{n}", str(tmp_path / f"out-{n}.json")],
            cwd=ROOT,
        )
        for n in range(4)
    ]  # fmt: skip
    for p in procs:
        assert p.wait(60) == 0
    claimed = [json.loads((tmp_path / f"out-{n}.json").read_text()) for n in range(4)]
    flat = [sid for ids in claimed for sid in ids]
    assert len(flat) == len(set(flat)) == 600, "every saga claimed once, by one owner"
    check = SqliteSagaLog.open(DbConfig(log_path))
    page = check.list_sagas_sync(SagaFilter(statuses=ACTIVE_STATUSES), limit=1000)
    owners = {r.owner for r in page.items}
    check.close_sync()
    assert owners <= {f"owner-{n}" for n in range(4)}


def test_many_processes_write_one_log(tmp_path: Path) -> None:
    """Four processes, each with its own group-commit writer, hammer one file: lock
    contention waits on the busy timeout instead of failing, and nothing is lost."""
    log_path = tmp_path / "saga.db"
    SqliteSagaLog.open(DbConfig(log_path)).close_sync()  # migrate once up front
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.engine.crash_driver", "fill", str(log_path),
             f"p{n}", "300"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )
        for n in range(4)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    log = SqliteSagaLog.open(DbConfig(log_path))
    counts = asyncio.run(log.count_by_status())
    sample = log.transitions_sync("p3-299")
    log.close_sync()
    assert counts[SagaStatus.RUNNING] == 1200
    assert [t.seq for t in sample] == [1, 2]
