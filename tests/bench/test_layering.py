"""Dependencies go one way: the benchmarks import the product, the product (and the
tests' shared helpers) never import the benchmarks, so that shipping or testing the
product never needs the benchmark harness or its extras."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INDEPENDENT = ("engine", "services", "gateway", "recovery", "saga", "tests/support")


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", INDEPENDENT)
def test_the_package_never_imports_the_benchmarks(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}"
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported(path) if name == "bench" or name.startswith("bench.")
        )
        for path in files
    }
    assert {path: names for path, names in offenders.items() if names} == {}
