"""`saga ls` and `saga show` as an operator runs them, against a real saga log file written
through the engine's own API; and every mistake an operator can make answered with one
clear line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.sqlite import DbConfig, open_connection
from tests.ops.helpers import (
    SagaSpec,
    assert_error_line,
    build_log,
    parked_transitions,
    record,
    run_saga,
)
from tests.support.folders import unwritable_folder
from tests.support.procs import base_env

MIN = 60_000
HOUR = 60 * MIN


def finished(status: SagaStatus) -> list[Transition]:
    phase = Phase.COMPLETED if status is SagaStatus.COMPLETED else Phase.COMPENSATED
    return [Transition("", phase, 0)]


# Oldest first; ages at the moment the log is built.
SPECS = (
    SagaSpec("old-done", 3 * HOUR, finished(SagaStatus.COMPLETED), SagaStatus.COMPLETED),
    SagaSpec(
        "old-cancelled",
        2 * HOUR,
        finished(SagaStatus.COMPENSATED),
        SagaStatus.COMPENSATED,
        "out_of_stock",
    ),
    SagaSpec(
        "parked",
        90 * MIN,
        parked_transitions("claimed 17 times without progress"),
        SagaStatus.NEEDS_ATTENTION,
        "claimed 17 times without progress",
    ),
    SagaSpec("refund-1", 30 * MIN, definition="refund"),
    SagaSpec("stuck", 20 * MIN, [Transition("create_order", Phase.INTENT, 1)]),
    SagaSpec("fresh", 2_000, owner=None),
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir()
    build_log(data / "saga.db", SPECS, time.time_ns() // 1_000_000)
    return base_env(SAGA_DATA_DIR=str(data))


def ls_json(env: dict[str, str], *args: str) -> tuple[list[str], str | None]:
    ran = run_saga("ls", "--json", *args, env=env)
    assert ran.code == 0, ran
    doc = json.loads(ran.out)
    return [row["id"] for row in doc["sagas"]], doc["next_cursor"]


def test_ls_is_a_table_newest_first(env: dict[str, str]) -> None:
    ran = run_saga("ls", env=env)
    assert ran.code == 0, ran
    header, *rows = ran.out.splitlines()
    assert header.split() == ["ID", "STATUS", "DEFINITION", "AGE", "EPOCH", "OWNER", "REASON"]
    assert [r.split()[0] for r in rows] == [s.id for s in reversed(SPECS)]
    fresh, stuck = rows[0].split(), rows[1].split()
    assert fresh[1:3] == ["RUNNING", "order"]
    assert fresh[4:] == ["1", "-", "-"]  # epoch 1, unowned, no reason
    # 20 minutes when the log was built, plus however long `saga ls` took to start.
    assert re.fullmatch(r"20m[0-5]\ds", stuck[3]), stuck
    assert "gateway@gone (lease expired)" in rows[1]
    assert rows[3].split()[1] == "NEEDS_ATTENTION"
    assert "claimed 17 times without progress" in rows[3]


def test_ls_filters(env: dict[str, str]) -> None:
    assert ls_json(env, "--status", "running")[0] == ["fresh", "stuck", "refund-1"]
    assert ls_json(env, "--status", "Completed", "--status", "COMPENSATED")[0] == [
        "old-cancelled",
        "old-done",
    ]
    assert ls_json(env, "--older-than", "1h")[0] == ["parked", "old-cancelled", "old-done"]
    assert ls_json(env, "--newer-than", "25m")[0] == ["fresh", "stuck"]
    assert ls_json(env, "--older-than", "10m", "--newer-than", "1h")[0] == ["stuck", "refund-1"]
    assert ls_json(env, "--definition", "refund")[0] == ["refund-1"]
    assert ls_json(env, "--status", "running", "--definition", "order", "--older-than", "1m")[
        0
    ] == ["stuck"]
    ran = run_saga("ls", "--status", "compensating", env=env)
    assert (ran.code, ran.out.strip()) == (0, "no sagas match")


def test_ls_json_pages_with_the_cursor(env: dict[str, str]) -> None:
    seen: list[str] = []
    ids, cursor = ls_json(env, "--limit", "4")
    seen += ids
    assert cursor is not None
    ids, cursor = ls_json(env, "--limit", "4", "--cursor", cursor)
    seen += ids
    assert cursor is None
    assert seen == [s.id for s in reversed(SPECS)]

    doc = json.loads(run_saga("ls", "--json", "--status", "needs_attention", env=env).out)
    (row,) = doc["sagas"]
    assert set(row) >= {"id", "status", "definition", "created_at", "age_ms", "epoch", "owner"}
    assert row["status"] == "NEEDS_ATTENTION"
    assert row["reason"] == "claimed 17 times without progress"
    assert row["created_at"].endswith("Z")
    table = run_saga("ls", "--limit", "4", env=env)
    assert table.out.splitlines()[-1].startswith("(more: repeat with --cursor ")


def test_show_a_parked_saga_says_what_an_operator_can_do(env: dict[str, str]) -> None:
    ran = run_saga("show", "parked", env=env)
    assert ran.code == 0, ran
    lines = ran.out.splitlines()
    assert "status    NEEDS_ATTENTION" in lines
    assert "reason    claimed 17 times without progress" in lines
    # before its pivot, so both ways out are open
    assert (
        "next      nothing: parked, needs an operator (saga retry parked, or saga cancel parked)"
        in lines
    )
    doc = json.loads(run_saga("show", "parked", "--json", env=env).out)
    rec, transitions = record(Path(env["SAGA_DATA_DIR"]) / "saga.db", "parked")
    assert [(s["step"], s["phase"], s["attempt"]) for s in doc["steps"]] == [
        (t.step, t.phase.value, t.attempt) for t in transitions
    ]
    assert doc["next"]["action"] == "nothing"
    assert (doc["status"], doc["epoch"]) == ("NEEDS_ATTENTION", rec.epoch)


def test_show_what_a_stuck_saga_would_do_next(env: dict[str, str]) -> None:
    ran = run_saga("show", "stuck", env=env)
    assert ran.code == 0, ran
    assert (
        "next      call create_order (attempt 2), by the next gateway or recovery daemon "
        "to claim it" in ran.out
    )
    other = run_saga("show", "refund-1", env=env)
    assert "next      unknown: cannot fold this log (definition 'refund' is not known" in other.out


def test_show_judges_by_the_budgets_the_system_runs_with(env: dict[str, str]) -> None:
    # `stuck` has used its first attempt; with one attempt in all (the gateway's and the
    # daemon's SAGA_STEP_MAX_ATTEMPTS), what comes next is compensation, not a second call.
    ran = run_saga("show", "stuck", env={**env, "SAGA_STEP_MAX_ATTEMPTS": "1"})
    assert ran.code == 0, ran
    assert "next      start compensating (order_service_unavailable)" in ran.out
    bad = run_saga("show", "stuck", env={**env, "SAGA_STEP_MAX_ATTEMPTS": "many"})
    assert_error_line(bad, "SAGA_STEP_MAX_ATTEMPTS")


def test_looking_needs_no_write_lock(env: dict[str, str]) -> None:
    # A writer in the middle of a long transaction (a migrating gateway, an operator's
    # sqlite3 shell): ls and show read the last commit at once; a write still has to wait.
    env = {**env, "SAGA_SQLITE_BUSY_TIMEOUT_MS": "200"}
    holder = open_connection(DbConfig(Path(env["SAGA_DATA_DIR"]) / "saga.db"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert_looks_but_cannot_change(env, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_looking_needs_no_write_access(env: dict[str, str]) -> None:
    # An operator who is not the service's user, or a log on a read-only mount: the
    # folder takes no new file, yet a stopped system's log can still be read.
    folder = Path(env["SAGA_DATA_DIR"])
    with unwritable_folder(folder):
        assert_looks_but_cannot_change(env, "cannot be opened")


def assert_looks_but_cannot_change(env: dict[str, str], why: str) -> None:
    """ls and show answer from the log; retry, which must write, fails saying `why`."""
    listed = run_saga("ls", env=env)
    assert listed.code == 0, listed
    assert len(listed.out.splitlines()) == 1 + len(SPECS)
    shown = run_saga("show", "parked", env=env)
    assert shown.code == 0, shown
    assert "NEEDS_ATTENTION" in shown.out
    assert_error_line(run_saga("retry", "parked", env=env), why, code=2)


def test_retry_and_cancel_change_a_stopped_systems_log(env: dict[str, str]) -> None:
    """No process runs: the change is durable in the log and waits for the next runner."""
    log_path = Path(env["SAGA_DATA_DIR"]) / "saga.db"
    before, _ = record(log_path, "parked")
    ran = run_saga("retry", "parked", env=env)
    assert ran.code == 0, ran
    assert ran.out.startswith("retried parked: now RUNNING at epoch")
    after, transitions = record(log_path, "parked")
    assert (after.status, after.owner, after.epoch) == (SagaStatus.RUNNING, None, before.epoch + 1)
    assert transitions[-1].phase is Phase.RESUMED
    assert (transitions[-1].error or "").startswith("resumed by saga-cli:")

    ran = run_saga("cancel", "stuck", env=env)
    assert ran.code == 0, ran
    stuck, _ = record(log_path, "stuck")
    assert (stuck.status, stuck.reason, stuck.owner) == (
        SagaStatus.COMPENSATING,
        "cancelled_by_operator",
        None,
    )
    # nobody drives it: --wait says so, and exits 1 (not final)
    ran = run_saga("cancel", "fresh", "--wait", "0.3", env=env)
    assert ran.code == 1, ran
    assert "fresh is still COMPENSATING after 0.3s" in ran.out


def test_refusals_exit_3_and_change_nothing(env: dict[str, str]) -> None:
    log_path = Path(env["SAGA_DATA_DIR"]) / "saga.db"
    before = record(log_path, "old-done")
    ran = run_saga("cancel", "old-done", env=env)
    assert_error_line(ran, "cannot cancel old-done (saga_finished)", code=3)
    ran = run_saga("retry", "stuck", env=env)
    assert_error_line(ran, "cannot retry stuck (not_parked)", "it is RUNNING", code=3)
    assert record(log_path, "old-done") == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("show", "nope"), ("no saga nope",)),
        (("retry", "nope"), ("no saga nope",)),
        (("cancel", "nope"), ("no saga nope",)),
        (("cancel", "nope", "--dry-run"), ("no saga nope",)),
        (("ls", "--older-than", "5x"), ("--older-than '5x'", "like 90s, 5m")),
        (("ls", "--newer-than", "10"), ("--newer-than '10'",)),
        (("ls", "--status", "done"), ("--status 'done'", "NEEDS_ATTENTION")),
        (("ls", "--older-than", "1h", "--newer-than", "5m"), ("select nothing",)),
        (("ls", "--cursor", "garbage"), ("invalid cursor",)),
        (("ls", "--limit", "0"), ("--limit 0",)),
        (("retry",), ("give a saga id, or filters",)),
        (("cancel", "stuck", "--status", "running"), ("not both",)),
        (("cancel", "--status", "bogus", "--yes"), ("--status 'bogus'",)),
        (("retry", "--older-than", "soon"), ("--older-than 'soon'",)),
        (("retry", "parked", "--wait", "-1"), ("--wait -1",)),
        (("cancel", "stuck", "--wait", "nan"), ("--wait nan", "finite")),
        (("audit", "--wait", "inf"), ("--wait inf", "finite")),
    ],
)
def test_mistakes_are_one_clear_line(
    env: dict[str, str], args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_error_line(run_saga(*args, env=env), *fragments)


@pytest.mark.parametrize("command", [("ls",), ("show", "x"), ("retry", "x"), ("cancel", "x")])
def test_no_log_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = base_env(SAGA_DATA_DIR=str(tmp_path / "nowhere"))
    ran = run_saga(*command, env=env)
    assert_error_line(ran, f"no saga log at {tmp_path / 'nowhere' / 'saga.db'}; set SAGA_DATA_DIR")
    assert not (tmp_path / "nowhere").exists()  # looking did not create it


def test_the_log_is_found_like_every_process_finds_it(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "sagas.sqlite"
    path.parent.mkdir()
    build_log(path, SPECS[:1], time.time_ns() // 1_000_000)
    by_env = run_saga("ls", env=base_env(SAGA_LOG_DB_PATH=str(path)))
    assert "old-done" in by_env.out
    by_flag = run_saga("ls", "--log-db", str(path), env=base_env(SAGA_DATA_DIR=str(tmp_path)))
    assert "old-done" in by_flag.out
    other = tmp_path / "other"
    other.mkdir()
    build_log(other / "saga.db", SPECS[1:2], time.time_ns() // 1_000_000)
    # the flag beats the environment
    by_dir = run_saga("ls", "--data-dir", str(other), env=base_env(SAGA_LOG_DB_PATH=str(path)))
    assert "old-cancelled" in by_dir.out
    assert "old-done" not in by_dir.out


def test_a_file_that_is_not_a_saga_log(tmp_path: Path) -> None:
    ledger = tmp_path / "inventory.db"
    conn = open_connection(DbConfig(ledger))
    conn.execute("CREATE TABLE stock (product_id TEXT PRIMARY KEY, available INTEGER)")
    conn.close()
    ran = run_saga("ls", "--log-db", str(ledger), env=base_env())
    assert_error_line(ran, "is not a saga log")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all, just some text" * 100)
    ran = run_saga("show", "x", "--log-db", str(garbage), env=base_env())
    assert_error_line(ran, "not a SQLite database")
    conn = open_connection(DbConfig(ledger, readonly=True))
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    conn.close()
    assert names == {"stock", "sqlite_autoindex_stock_1"}  # untouched: no log tables added
