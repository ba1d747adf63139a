"""The benchmark harness runs (CI smoke): `bench engine --quick` completes and writes a
well-formed table with a row for every backend at every concurrency.

No timing is asserted here, ever: a benchmark's numbers mean something only beside the
baseline of the same run, read by a person. DBOS and the chart are optional (the `bench`
extra, not installed by scripts/test); without them the harness skips them and says so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from bench.cli import main as bench_main
from bench.engine import HEADER, Backend
from bench.report import markdown_table, median, percentile
from saga.cli import main as saga_main

HAS_DBOS = importlib.util.find_spec("dbos") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _table(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("x"))


def test_engine_quick_writes_a_row_for_every_backend(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_main, ["engine", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output

    markdown = (tmp_path / "engine.md").read_text(encoding="utf-8")
    assert markdown in result.output  # printed as well as written
    header, separator, *rows = _table(markdown)
    assert tuple(header) == HEADER
    assert len(separator) == len(HEADER)
    assert all(len(row) == len(HEADER) for row in rows)

    expected = {Backend.DURABLE, Backend.MEMORY} | ({Backend.DBOS} if HAS_DBOS else set())
    present = {(row[0], int(row[1])) for row in rows}
    assert present == {(b.value, c) for b in expected for c in (1, 16)}
    for row in rows:
        if row[0] != Backend.DBOS.value:  # the engine never fails here; DBOS may, and says so
            assert _number(row[2]) > 0
    if not HAS_DBOS:
        assert "DBOS is not installed" in markdown
    assert (tmp_path / "engine.json").exists()
    assert (tmp_path / "engine.png").exists() == HAS_MATPLOTLIB


def test_engine_quick_on_postgresql_commits_in_groups_beside_sqlite(tmp_path: Path) -> None:
    args = ["engine", "--quick", "--no-dbos", "--no-chart", "--backend", "postgres"]
    result = CliRunner().invoke(bench_main, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "engine.md").read_text(encoding="utf-8")
    _, _, *rows = _table(markdown)
    by = {(row[0], int(row[1])): row for row in rows}
    assert set(by) == {
        (b.value, c) for b in (Backend.DURABLE, Backend.POSTGRES, Backend.MEMORY) for c in (1, 16)
    }
    for c in (1, 16):
        row = by[(Backend.POSTGRES.value, c)]
        assert _number(row[2]) > 0  # every saga completed (else "failed")
        assert _number(row[6]) > 0  # commits per saga, counted by the log's group commit
    assert "--backend postgres" in markdown  # the command that reproduces it


def test_the_benchmarks_run_as_python_m_bench_and_not_from_saga() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "engine", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "python -m bench engine" in done.stdout
    assert "--quick" in done.stdout
    result = CliRunner().invoke(saga_main, ["bench", "engine"])
    assert result.exit_code == 2
    assert "No such command 'bench'" in result.output


def test_percentile_is_nearest_rank_and_median_skips_nothing_real() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile([], 99) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([]) is None


def test_markdown_table_right_aligns_numbers() -> None:
    table = markdown_table(("a", "b", "n"), [("x", "1", "2")])
    assert table.splitlines()[1] == "|---|---|--:|"


def test_contention_quick_measures_one_process_then_two(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_main, ["contention", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "contention.md").read_text(encoding="utf-8")
    header, _, *rows = _table(markdown)
    assert header[:2] == ["processes", "process"]
    assert [(row[0], row[1]) for row in rows] == [("1 (rep 1)", "1"), ("2 (rep 1)", "1"),
                                                  ("2 (rep 1)", "2")]  # fmt: skip
    assert all(_number(row[2]) > 0 for row in rows), "every process committed"
    assert "failed" not in markdown
