"""The stack benchmarks run (CI smoke): `bench e2e|recovery|overload --quick` each start
the real stack, complete in seconds and write a well-formed table.

No timing is asserted, ever: only that each completes, that its table has the columns
its module declares and a number where a number belongs, and that the invariants it
reports on (the audit, nothing lost) hold. Skipped where the stack cannot run: Redis
(e2e and overload start a private redis-server) may be missing from a machine.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.ceiling import HEADER as CEILING_HEADER
from bench.cli import main as bench_main
from bench.e2e import HEADER as E2E_HEADER
from bench.e2e import Backend, Client, E2eSettings
from bench.e2e_report import CPU_HEADER, OPEN_HEADER, SERVICE_HEADER
from bench.loadgen import LoadResult, Sample
from bench.orchestrators import find_restate
from bench.peers import HEADER as PEERS_HEADER
from bench.peers import Peer
from bench.peers_kill import KILL_HEADER
from bench.recovery import HEADER as RECOVERY_HEADER
from bench.recovery import Kind
from bench.scale import HEADER as SCALE_HEADER
from bench.wrk import find_wrk
from orders.saga import STEP_NAMES

pytestmark = pytest.mark.slow

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


HAS_WRK = shutil.which("wrk") is not None


def _table(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of the report, in order (blocks of consecutive `|` lines)."""
    tables: list[list[list[str]]] = []
    inside = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not inside:
                tables.append([])
            tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
        inside = line.startswith("|")
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("x").removesuffix("%"))


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(bench_main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@needs_redis
def test_e2e_quick_writes_a_row_per_client_and_backend(tmp_path: Path) -> None:
    shares = ("--open-share", "0.8", "--open-share", "0.5")
    output = _invoke(
        "e2e", "--quick", *shares, "--no-chart", "--no-install", "--out", str(tmp_path)
    )
    markdown = (tmp_path / "e2e.md").read_text(encoding="utf-8")
    assert markdown in output
    assert "--open-share 0.5 --open-share 0.8" in markdown  # the command that reproduces it
    tables = _tables(markdown)
    (header, separator, *rows), (cpu_header, _, *cpu_rows), (svc_header, _, *svc) = tables[:3]
    (open_header, _, *open_rows), (ceiling_header, _, *ceiling) = tables[3:5]
    assert tuple(header) == E2E_HEADER
    assert len(separator) == len(E2E_HEADER)
    clients = [c for c in Client if c is not Client.WRK or HAS_WRK]
    backends = E2eSettings().backends  # SQLite and in-memory unless told
    expected = {(c.value, b.value, "4") for c in clients for b in backends}
    assert {(row[0], row[1], row[2]) for row in rows} == expected
    for row in rows:
        assert len(row) == len(E2E_HEADER)
        assert _number(row[3]) > 0 and _number(row[5]) > 0  # accepted, end to end
        assert _number(row[10]) > 0  # the stack's CPU per 1,000 orders
        assert row[14].endswith("x")  # the ratio to the ceiling of the same run
    # CPU per 1,000 orders for every process of the stack; the daemon beside the durable log
    assert tuple(cpu_header) == CPU_HEADER
    for row in cpu_rows:
        cells = dict(zip(cpu_header, row, strict=True))
        for name in ("gateway", "order", "payment", "inventory", "whole stack"):
            assert _number(cells[name]) > 0, (name, row)
        durable = cells["saga log"] == Backend.DURABLE.value
        assert (cells["recovery"] != "—") == durable
    # CPU per call of each service (on SQLite ledgers whatever the log), counted calls
    assert tuple(svc_header) == SERVICE_HEADER
    assert {(row[0], row[1], row[2]) for row in svc} == expected
    for row in svc:
        cells = dict(zip(svc_header, row, strict=True))
        assert (
            _number(cells["order calls/order"]) >= 2 and _number(cells["payment CPU µs/call"]) > 0
        )
    # The ceiling: the order saga's four calls and the engine's own count of commits
    assert tuple(ceiling_header) == CEILING_HEADER
    (row,) = ceiling
    cells = dict(zip(ceiling_header, row, strict=True))
    assert cells["concurrency"] == "8"
    assert _number(cells["gRPC calls/saga"]) == len(STEP_NAMES)
    assert _number(cells["writes/saga"]) >= 2
    raw = json.loads((tmp_path / "e2e.json").read_text(encoding="utf-8"))
    runs = [r for r in raw["runs"] if "ceiling" not in r]
    assert len(runs) == 2 * len(clients) + 2 and all(r["error"] is None for r in runs)
    # The open loop: the durable stack at each share of the best closed-loop rate of the rep
    open_runs = [r for r in runs if r["rate"] is not None]
    closed = max(
        r["e2e_per_s"]
        for r in runs
        if r["rate"] is None and r["backend"] == open_runs[0]["backend"]
    )
    assert sorted((r["share"], r["rate"]) for r in open_runs) == [
        (0.5, pytest.approx(0.5 * closed)),
        (0.8, pytest.approx(0.8 * closed)),
    ]
    assert tuple(open_header) == OPEN_HEADER
    assert sorted(row[open_header.index("share")] for row in open_rows) == ["50%", "80%"]
    for open_row in open_rows:
        cells = dict(zip(open_header, open_row, strict=True))
        assert cells["saga log"] == Backend.DURABLE.value
        assert _number(cells["201s/s achieved"]) > 0 and _number(cells["201 p99 (ms)"]) > 0
    # The target's verdict reads the 80% run alone
    assert "open loop at 80% of the sustainable rate" in markdown
    assert "median of 1)" in markdown
    if HAS_WRK:
        assert "found on PATH" in markdown


@needs_redis
def test_e2e_on_postgresql_writes_into_its_own_database(tmp_path: Path) -> None:
    args = ["e2e", "--quick", "--client", "loadgen", "--backend", "sqlite", "--backend"]
    _invoke(
        *args, "postgres", "--no-ceiling", "--no-open-loop", "--no-chart", "--out", str(tmp_path)
    )
    markdown = (tmp_path / "e2e.md").read_text(encoding="utf-8")
    (_, _, sqlite, pg), (cpu_header, _, _, cpu_row), (svc_header, _, *svc) = _tables(markdown)[:3]
    assert (pg[0], pg[1]) == (Client.OWN.value, Backend.POSTGRES.value)
    assert sqlite[1] == Backend.DURABLE.value
    # end to end: the sagas were in the database and every ledger had rows (else failed)
    assert _number(pg[5]) > 0
    cells = dict(zip(cpu_header, cpu_row, strict=True))
    assert _number(cells["postgres"]) > 0
    assert tuple(svc_header) == SERVICE_HEADER
    assert [row[1] for row in svc] == [Backend.DURABLE.value, Backend.POSTGRES.value]
    for row in svc:  # each service's calls counted, and its CPU per call, on both
        per = dict(zip(svc_header, row, strict=True))
        assert _number(per["order calls/order"]) >= 2  # create and confirm (or cancel)
        assert _number(per["payment calls/order"]) >= 0.5
        assert all(_number(per[f"{s} CPU µs/call"]) > 0 for s in ("order", "payment", "inventory"))
    runs = json.loads((tmp_path / "e2e.json").read_text(encoding="utf-8"))["runs"]
    assert all(r["error"] is None and r["unsettled"] == 0 for r in runs)


def test_ceiling_quick_makes_the_sagas_calls_and_writes(tmp_path: Path) -> None:
    _invoke("ceiling", "--quick", "--out", str(tmp_path))
    markdown = (tmp_path / "ceiling.md").read_text(encoding="utf-8")
    ((header, _, row),) = _tables(markdown)
    cells = dict(zip(header, row, strict=True))
    assert _number(cells["sagas"]) > 0 and _number(cells["sagas/s"]) > 0
    assert _number(cells["gRPC calls/saga"]) == len(STEP_NAMES)
    raw = json.loads((tmp_path / "ceiling.json").read_text(encoding="utf-8"))
    (run,) = raw["runs"]
    # as many writes as the engine's commits per saga, measured in the same run
    assert run["writes_per_saga"] == round(run["engine_commits_per_saga"])
    assert run["commits"] > 0 and set(run["cpu_s"]) == {"driver", "order", "payment", "inventory"}


@needs_redis
def test_scale_quick_shares_one_postgresql_log_between_gateways(tmp_path: Path) -> None:
    _invoke("scale", "--quick", "--no-install", "--out", str(tmp_path))
    markdown = (tmp_path / "scale.md").read_text(encoding="utf-8")
    ((header, _, *rows),) = _tables(markdown)
    assert tuple(header) == SCALE_HEADER
    assert [(row[0], row[1]) for row in rows] == [("1", "4"), ("2", "2 + 2")]
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert _number(cells["end-to-end orders/s"]) > 0
        assert _number(cells["gateways CPU s/1k"]) > 0
        assert _number(cells["services CPU s/1k"]) > 0
        assert _number(cells["postgres CPU s/1k"]) > 0  # the server's work is counted
    assert rows[0][4] == "1.00x"
    raw = json.loads((tmp_path / "scale.json").read_text(encoding="utf-8"))
    two = next(r for r in raw["runs"] if r["gateways"] == 2)
    assert two["error"] is None
    # both gateways took orders and were charged for them; every order reached the log
    assert two["cpu_s"]["gateway"] > 0 and two["cpu_s"]["gateway-2"] > 0
    assert two["orders"] >= two["accepted"] > 0


@needs_redis
@pytest.mark.skipif(importlib.util.find_spec("dbos") is None, reason="DBOS is not installed")
def test_peers_quick_runs_the_saga_on_each_and_every_order_ends(tmp_path: Path) -> None:
    output = _invoke("peers", "--quick", "--no-install", "--out", str(tmp_path))
    markdown = (tmp_path / "peers.md").read_text(encoding="utf-8")
    (header, _, *rows), (kill_header, _, *kills) = _tables(markdown)
    assert tuple(header) == PEERS_HEADER
    restate, _ = find_restate(None)  # on PATH, from the npm package, where installed
    expected = [p for p in Peer if p is not Peer.RESTATE or (restate and HAS_WRK)]
    assert [row[0] for row in rows] == [p.value for p in expected]
    if Peer.RESTATE not in expected:
        assert "Restate is skipped" in output
    raw = json.loads((tmp_path / "peers.json").read_text(encoding="utf-8"))
    by_peer = {r["peer"]: r for r in raw["runs"] if "kill" not in r}
    ends = {Peer.SAGA: "CONFIRMED", Peer.DBOS: "SUCCESS", Peer.RESTATE: "success"}
    for peer in expected:
        got = by_peer[peer.value]
        assert got["error"] is None, got
        assert got["orders"] >= got["accepted"] > 0
        # every order the peer recorded reached its end, and only the end it should
        assert got["ended"] == {ends[peer]: got["orders"]}
    assert _number(rows[1][6]) > 0  # DBOS's end-to-end rate over this stack's
    # kill -9: each orchestrator killed mid-load and restarted; what the load saw acked
    # is all there and ended, and no key got two orders
    assert tuple(kill_header) == KILL_HEADER
    killed = {k["kill"]["peer"]: k["kill"] for k in raw["runs"] if "kill" in k}
    assert sorted(killed) == sorted(p.value for p in expected)
    for got in killed.values():
        assert got["error"] is None, got
        assert got["acked"] > 0 and got["abandoned"] == 0
        assert got["never_ended"] == got["answered_twice"] == got["extra_orders"] == 0
    assert len(kills) == len(expected)


def test_peers_without_redis_runs_the_saga_as_saga_up_does(tmp_path: Path) -> None:
    # Only this project's run is checked: a peer that cannot run here is skipped.
    _invoke("peers", "--quick", "--no-redis", "--no-kill", "--no-install", "--out", str(tmp_path))
    markdown = (tmp_path / "peers.md").read_text(encoding="utf-8")
    assert "--no-redis" in markdown  # the command that reproduces it
    assert f"- {Peer.SAGA.value}: `saga gateway` + `saga recovery`, no Redis" in markdown
    raw = json.loads((tmp_path / "peers.json").read_text(encoding="utf-8"))
    (saga,) = [r for r in raw["runs"] if r.get("peer") == Peer.SAGA.value]
    assert saga["error"] is None, saga
    assert saga["orders"] >= saga["accepted"] > 0
    assert saga["ended"] == {"CONFIRMED": saga["orders"]}


def test_without_wrk_the_benchmark_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no wrk, no apt-get
    found = find_wrk(install=True)
    assert found.path is None
    assert found.how == "wrk is not on PATH and cannot be installed (no apt-get)"


def test_recovery_quick_recovers_every_saga_and_the_audit_agrees(tmp_path: Path) -> None:
    _invoke("recovery", "--quick", "--out", str(tmp_path))
    markdown = (tmp_path / "recovery.md").read_text(encoding="utf-8")
    header, _, *rows = _table(markdown)
    assert tuple(header) == ("backlog", *RECOVERY_HEADER)
    assert [row[0] for row in rows] == [k.value for k in Kind]
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert _number(cells["sagas/s"]) > 0
        assert cells["NEEDS_ATTENTION"] == "0" and cells["audit violations"] == "0"
    assert "by crash point:" in markdown  # the spread of the crashed backlog is described


def test_recovery_on_postgresql_with_two_daemons_claims_no_saga_twice(tmp_path: Path) -> None:
    args = ["recovery", "--quick", "--backend", "postgres", "--daemons", "2"]
    _invoke(*args, "--out", str(tmp_path))
    markdown = (tmp_path / "recovery.md").read_text(encoding="utf-8")
    header, _, *rows = _table(markdown)
    got = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows}
    assert set(got) == {
        (Kind.CRASHED.value, "1"),
        (Kind.CRASHED.value, "2"),
        (Kind.FRESH.value, "1"),
    }
    for cells in got.values():
        assert _number(cells["sagas/s"]) > 0
        assert cells["… at one epoch"] == "0" and cells["audit violations"] == "0"
    assert got[(Kind.CRASHED.value, "2")]["vs 1 daemon"].endswith("x")
    raw = json.loads((tmp_path / "recovery.json").read_text(encoding="utf-8"))
    two = next(r for r in raw["runs"] if r["daemons"] == 2)
    # every crashed saga belonged to a dead gateway, so each was claimed at least once
    assert two["error"] is None and two["claims"] >= two["sagas"]
    assert two["cpu"]["recovery"] > 0 and two["cpu"]["postgres"] > 0


@needs_redis
def test_overload_quick_refuses_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    _invoke("overload", "--quick", "--out", str(tmp_path))
    markdown = (tmp_path / "overload.md").read_text(encoding="utf-8")
    _, _, *rows = _table(markdown)
    cells = {row[0]: row[1] for row in rows}
    assert _number(cells["sustainable rate (orders/s, measured first)"]) > 0
    assert _number(cells["201 accepted"]) > 0
    assert cells["201s not terminal after SIGKILL + recovery"] == "0"
    assert cells["audit violations"] == "0"
    assert cells["other 5xx"] == "0"
    assert cells["503 overloaded"] == cells["… of which with Retry-After"]


def test_load_results_survive_their_json() -> None:
    result = LoadResult(1.5, 2.0, 0.1, (Sample(0.1, 0.02, 201, "id", False, ""),))
    assert LoadResult.from_json(result.to_json()) == result
