"""Wall clocks for child processes that are not the host's: Debian's libfaketime, with the
monotonic and boot clocks left real, as a step of the wall clock leaves them."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["WallClock", "faketime_preload"]

# The kernel's clock_nanosleep, not libfaketime's: with DONT_FAKE_MONOTONIC=1 its wrapper
# answers EINVAL to every absolute sleep on the monotonic clock (Python's time.sleep).
SHIM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int clock_nanosleep(clockid_t id, int flags, const struct timespec *req,
                    struct timespec *rem) {
    return syscall(SYS_clock_nanosleep, id, flags, req, rem) == -1 ? errno : 0;
}
"""


class WallClock:
    """A wall clock for child processes, `offset` from the host's, changeable while they
    run (libfaketime re-reads its file once a second: every call would slow the process down)."""

    def __init__(self, folder: Path, name: str, preload: str) -> None:
        self.file = folder / f"{name}.faketime"
        self.preload = preload
        self.set("+0")

    def set(self, offset: str) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.file)  # a reader never sees half a line

    @property
    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": self.preload,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_CACHE_DURATION": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }


def faketime_preload(folder: Path) -> str:
    """LD_PRELOAD for libfaketime with the shim in front of it, built in `folder`
    (scripts/test installs libfaketime)."""
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("libfaketime is not installed (Debian: apt-get install faketime)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler to build the clock_nanosleep shim")
    source = folder / "shim.c"
    source.write_text(SHIM)
    shim = folder / "shim.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", shim, source], check=True)
    return f"{shim} {libs[0]}"
