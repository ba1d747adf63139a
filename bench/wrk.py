"""wrk, the external load generator a user would reach for, driving `POST /orders`.

`bench e2e` runs it beside bench/loadgen.py so that its table shows what a user measures
with a tool of their own. wrk is found on PATH, or installed from Debian's packages with
apt-get when the benchmark runs as root; `find_wrk` says which, or why there is none
(then only bench/loadgen.py runs). The Lua script (bench/wrk_orders.lua) gives every
request its own idempotency key and counts the answers by status.

What wrk cannot tell: the latency of one answer by its status (its histogram holds every
answer), so its p50/p99 are "of the 201s" only when every answer was a 201, which the
report checks; and which order a 201 named (the end-to-end rate is read from the log).
Its duration is whole seconds (wrk's `-d` takes no fraction).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.errors import BenchError

__all__ = ["SCRIPT", "WrkFound", "WrkResult", "WrkSpec", "find_wrk", "run_wrk"]

SCRIPT: Final = Path(__file__).with_name("wrk_orders.lua")
_INSTALL_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class WrkFound:
    """The wrk binary to use (None: none) and how it was found, in one line."""

    path: str | None
    how: str


def _version(path: str) -> str:
    done = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown version"


def find_wrk(*, install: bool = True) -> WrkFound:
    """wrk on PATH; else, as root with apt-get and `install`, wrk installed from Debian's
    packages; else None and why."""
    path = shutil.which("wrk")
    if path is not None:
        return WrkFound(path, f"wrk {_version(path)} found on PATH ({path})")
    apt = shutil.which("apt-get")
    if not install or apt is None or os.geteuid() != 0:
        why = "not root" if apt is not None else "no apt-get"
        return WrkFound(None, f"wrk is not on PATH and cannot be installed ({why})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            [apt, "install", "-y", "-q", "wrk"],
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return WrkFound(None, "wrk is not on PATH and `apt-get install wrk` timed out")
    path = shutil.which("wrk")
    if done.returncode != 0 or path is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return WrkFound(None, f"wrk is not on PATH and `apt-get install wrk` failed: {last}")
    return WrkFound(path, f"wrk {_version(path)} installed with apt-get ({path})")


@dataclass(frozen=True, slots=True)
class WrkSpec:
    port: int
    duration_s: float  # rounded up to whole seconds
    concurrency: int  # connections, each with one request in flight
    host: str = "127.0.0.1"
    threads: int = 2  # at most `concurrency`
    timeout_s: float = 10.0
    key_prefix: str = "wrk"
    path: str = "/orders"
    key_header: str = "X-Idempotency-Key"
    body: str = (
        '{"customer_id":"cust_bench","items":[{"product_id":"prod_1","quantity":1,"price":50.00}]}'
    )


@dataclass(frozen=True, slots=True)
class WrkResult:
    started_wall_s: float  # time.time() just before wrk was started
    seconds: float  # wrk's own measured duration
    cpu_seconds: float  # wrk's user + system time
    requests: int  # answers received
    sent: int  # requests made (the last ones may have had no answer when wrk stopped)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    p50_s: float | None = None  # over every answer, whatever its status
    p99_s: float | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def only_201(self) -> bool:
        return self.requests > 0 and self.ok == self.requests


def run_wrk(spec: WrkSpec, binary: str, workdir: Path) -> WrkResult:
    """Run wrk once against the gateway; raises BenchError if it fails."""
    result_path = workdir / f"{spec.key_prefix}-result.json"
    seconds = max(1, math.ceil(spec.duration_s))
    argv = [binary, "-t", str(max(1, min(spec.threads, spec.concurrency)))]
    argv += ["-c", str(spec.concurrency), "-d", f"{seconds}s"]
    argv += ["--timeout", f"{max(1, math.ceil(spec.timeout_s))}s", "-s", str(SCRIPT)]
    argv.append(f"http://{spec.host}:{spec.port}{spec.path}")
    env = {
        **os.environ,
        "WRK_BODY": spec.body,
        "WRK_KEY_PREFIX": spec.key_prefix,
        "WRK_PATH": spec.path,
        "WRK_KEY_HEADER": spec.key_header,
        "WRK_RESULT": str(result_path),
    }
    log_path = workdir / f"{spec.key_prefix}.log"
    started = time.time()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    _, status, usage = os.wait4(proc.pid, 0)  # its own rusage, not every child's
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-500:].strip()
        raise BenchError(f"wrk exited with {proc.returncode}: {tail}")
    doc = json.loads(result_path.read_text(encoding="utf-8"))
    return WrkResult(
        started_wall_s=started,
        seconds=float(doc["seconds"]),
        cpu_seconds=cpu,
        requests=int(doc["requests"]),
        sent=int(doc["sent"]),
        statuses={int(k): int(v) for k, v in doc["statuses"].items()},
        errors={k: int(v) for k, v in doc["errors"].items() if v},
        p50_s=float(doc["p50_s"]) if doc["requests"] else None,
        p99_s=float(doc["p99_s"]) if doc["requests"] else None,
    )
