"""A folder nobody can create files in, root included, for the tests that need one."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def unwritable_folder(folder: Path) -> Iterator[None]:
    """`chattr +i` on `folder` for the block: tests run as root, which file modes do not
    stop, and the immutable attribute stops even root from creating a file there. Skips
    where the file system or the container does not allow it."""
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make {folder} immutable here: {exc}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True, capture_output=True)
