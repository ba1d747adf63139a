"""Every property test (hypothesis, schemathesis) draws the same examples on every run, so
that a CI failure is not a lottery and can be run again here; hypothesis prints the
failing example and a blob to reproduce it. `FUZZ_SEARCH=1` draws new examples on each
run, to search further (a random run is what found the header tracing could not decode).

Profiles are loaded here, before any test module is imported, because a test's own
`@settings(...)` takes what it does not set from the profile loaded at that moment."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Generator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.pg import fresh_database

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("search", print_blob=True)
settings.load_profile("search" if os.environ.get("FUZZ_SEARCH") else "repeatable")


# ---- a failing test leaves what explains it ----------------------------------------------
#
# scripts/test sets DURABLE_SAGA_TEST_ARTIFACTS to a folder outside the clone. For each test
# that fails there, failed/<test id>/ gets failure.txt (the error of each failed phase and
# everything the test printed or logged) and logs/: a copy of every *.log under the test's
# folders, which is where the real-process helpers (tests/support) write the output of
# each process they start. A CI run that went red can then be read after the fact, when
# the temporary folders of that machine are long gone.

ARTIFACTS_VAR = "DURABLE_SAGA_TEST_ARTIFACTS"
_FAILED_PHASES = pytest.StashKey[list[pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    artifacts = os.environ.get(ARTIFACTS_VAR)
    if not artifacts:
        return report
    failed = item.stash.setdefault(_FAILED_PHASES, [])
    if report.failed:
        failed.append(report)
    # Teardown comes last, after the test's processes were killed and their logs complete.
    if report.when == "teardown" and failed:
        folder = Path(artifacts) / "failed" / _folder_name(item.nodeid)
        try:
            _keep_failure(folder, item, failed, report)
        except OSError as exc:  # a full disk must not turn one red test into a crashed run
            item.warn(pytest.PytestWarning(f"could not keep the failure in {folder}: {exc}"))
    return report


def _folder_name(nodeid: str) -> str:
    name = re.sub(r"[^\w.\[\]=-]+", "_", nodeid).strip("_")
    if len(name) > 120:  # long parameter ids: keep it a valid file name, still unique
        name = f"{name[:110]}_{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"
    return name


def _keep_failure(
    folder: Path, item: pytest.Item, failed: list[pytest.TestReport], last: pytest.TestReport
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"{item.nodeid}\n"]
    parts += [f"\n==== {r.when} failed\n{r.longreprtext}\n" for r in failed]
    # The teardown report carries the output captured in every phase.
    parts += [f"\n==== {title}\n{content}\n" for title, content in last.sections]
    (folder / "failure.txt").write_text("".join(parts), encoding="utf-8", errors="replace")
    for root in _test_folders(item):
        for log in sorted(root.rglob("*.log")):
            target = folder / "logs" / root.name / log.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # gone or unreadable: keep the others
                shutil.copyfile(log, target)


def _test_folders(item: pytest.Item) -> list[Path]:
    """The test's tmp_path and the temporary folders its fixtures hold (a module's shared
    stack keeps its processes' logs in its own temporary folder, as `data`). Only folders
    under pytest's base temporary folder: a fixture's Path may as well be the clone."""
    factory = getattr(item.config, "_tmp_path_factory", None)
    if factory is None:
        return []
    basetemp = Path(factory.getbasetemp()).resolve()
    values = getattr(item, "funcargs", None) or {}
    found: set[Path] = set()
    for value in values.values():
        for candidate in (value, getattr(value, "data", None)):
            if isinstance(candidate, Path) and candidate.is_dir():
                folder = candidate.resolve()
                if folder.is_relative_to(basetemp):
                    found.add(folder)
    # A stack's data folder inside the test's tmp_path is copied once, with tmp_path.
    return sorted(f for f in found if not any(f != g and f.is_relative_to(g) for g in found))


# ---- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Generator[str, None, None]:
    """A fresh database on the machine's PostgreSQL server (tests/support/pg.py), dropped
    after the test; the test fails in one line when the server is not running."""
    with fresh_database() as url:
        yield url
