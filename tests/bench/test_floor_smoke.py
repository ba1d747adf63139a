"""`bench floor --quick` runs (CI smoke): the two no-op servers and the payment service,
each a fresh process, in seconds, and a row of server CPU per call for each. No time is
asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main as bench_main
from bench.floor import KINDS

pytestmark = pytest.mark.slow


def test_floor_quick_reports_every_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_main, ["floor", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    raw = json.loads((tmp_path / "floor.json").read_text(encoding="utf-8"))
    (rep,) = raw["runs"]
    samples = {s["kind"]: s for s in rep["samples"]}
    assert set(samples) == set(KINDS)
    for sample in samples.values():
        assert sample["us_per_call"] > 0 and sample["client_us_per_call"] > 0
        assert 0 <= sample["user_share"] <= 1
    markdown = (tmp_path / "floor.md").read_text(encoding="utf-8")
    assert all(f"| {kind} |" in markdown for kind in KINDS)
