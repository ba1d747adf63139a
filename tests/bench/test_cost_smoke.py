"""`bench cost --quick` runs (CI smoke): the stack with two gateway workers and a service
alone, in seconds, and a row of CPU per order for every process. No time is asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main as bench_main
from bench.cost import ROLES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server"),
]


def test_cost_quick_reports_every_process(tmp_path: Path) -> None:
    args = ["cost", "--quick", "--workers", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 0, result.output
    raw = json.loads((tmp_path / "cost.json").read_text(encoding="utf-8"))
    (rep,) = raw["runs"]
    assert rep["orders"] > 0
    assert set(rep["ms_per_order"]) == set(ROLES)
    # The gateway's figure includes its workers: it drove every order.
    assert rep["ms_per_order"]["gateway"] > 0 and rep["us_per_call"] > 0
    markdown = (tmp_path / "cost.md").read_text(encoding="utf-8")
    assert all(f"| {role} |" in markdown for role in ROLES)
