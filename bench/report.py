"""What every benchmark shares: statistics over repetitions, ratios against a baseline
measured in the same run, markdown tables, the chart, and a description of the machine.

Benchmarks are not tests: nothing here asserts a time. A number is only worth printing
beside a baseline taken on the same machine in the same run, so tables carry ratios, and
each cell is the median of several repetitions (one slow repetition, a neighbour's burst
of I/O, does not move a median of three or five).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DASH",
    "Series",
    "fmt_ms",
    "fmt_num",
    "fmt_ratio",
    "machine",
    "markdown_table",
    "median",
    "percentile",
    "redact",
    "write_chart",
]

DASH = "—"  # a cell with nothing to say (no commits in memory, no latency probe in DBOS)


def median(values: Iterable[float]) -> float | None:
    """Median of the values that exist; None when there are none."""
    xs = [v for v in values if math.isfinite(v)]
    return statistics.median(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was really observed, so p99 of
    2,000 samples is the 20th slowest, not an interpolation between two."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    ms = seconds * 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; numbers (every column but the first two) right-aligned."""
    align = ["---" if i < 2 else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: a label and (x, y) points; y None is a gap (a failed run)."""

    label: str
    points: tuple[tuple[float, float | None], ...]


def write_chart(
    path: Path, series: Sequence[Series], *, title: str, xlabel: str, ylabel: str
) -> Path | None:
    """Draw the series to a PNG (log-log: concurrencies and rates span decades). Returns
    None when matplotlib is not installed (the `bench` extra): a chart is a nicety, the
    table is the result."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # headless: no display on CI or a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        for s in series:
            pts = [(x, y) for x, y in s.points if y is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=s.label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        xs = sorted({x for s in series for x, _ in s.points})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """The mount holding `path` (longest matching mount point in /proc/mounts): fsync on
    tmpfs is free, on a network disk it is slow, and the numbers mean nothing without it."""
    best, found = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1], parts[2]
                resolved = str(path.resolve())
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, found = mount, f"{fstype} on {device} (mounted at {mount})"
    except OSError:
        pass
    return found


def machine(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the numbers were measured on: cores this process may use (what `nproc` says),
    CPU model, Python, and the file system the databases lived on."""
    import apsw

    info = {
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "SQLite": f"{apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})",
        "database files on": _filesystem(data_dir),
    }
    info.update(extra or {})
    return info


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by `***` (for every message and file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def write_outputs(
    out: Path,
    name: str,
    markdown: str,
    *,
    settings: dict[str, object],
    machine: dict[str, str],
    runs: list[dict[str, object]],
    data_dir: Path,
) -> list[Path]:
    """Every benchmark's two files: NAME.md (the table) and NAME.json (every raw run,
    with the settings and the machine), in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md, raw = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown, encoding="utf-8")
    # A URL setting (--pg-url) may carry a password: never written out.
    shown = {
        k: redact(v) if isinstance(v, str) and k.endswith("_url") else v
        for k, v in settings.items()
    }
    doc = {
        "settings": {**shown, "out": str(out), "data_dir": str(data_dir)},
        "machine": machine,
        "runs": runs,
    }
    raw.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return [md, raw]
