"""Typed readers for settings given as environment variables.

Only entry points call these (STYLE 8): each process builds its own frozen settings object
from the environment once, at start-up, and passes it down. A bad value is a
`SettingsError` naming the variable, which the CLI prints as one clear line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from engine.errors import EngineError
from engine.sqlite import Synchronous

__all__ = [
    "DURATION_HINT",
    "Address",
    "SettingsError",
    "duration_ms",
    "env_addr",
    "env_duration_ms",
    "env_float",
    "env_int",
    "env_path",
    "env_synchronous",
]


class SettingsError(EngineError):
    code = "invalid_setting"


Address = tuple[str, int]


def parse_addr(raw: str, name: str) -> Address:
    host, sep, port_text = raw.strip().rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{name}={raw!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.removeprefix("[").removesuffix("]")  # IPv6 literals: [::1]:8080
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}={raw!r}: port must be between 0 and 65535")
    return host, port


def format_addr(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def env_addr(env: Mapping[str, str], name: str, default: str) -> Address:
    return parse_addr(env.get(name) or default, name)


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected a finite number >= {minimum}")
    return value


_UNITS_MS: Final = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_HINT: Final = "expected a duration like 90s, 5m, 1h30m or 2d (units ms, s, m, h, d, w)"


def duration_ms(text: str) -> int | None:
    """A human duration ("5m", "1h30m", "2d", "1.5h") in milliseconds; None when it is not
    one. A bare number is not: seconds or days would be a guess, and these durations
    decide what is cancelled or deleted."""
    raw = text.strip().lower().replace(" ", "")
    parts = _PART.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        return None
    return round(sum(float(n) * _UNITS_MS[u] for n, u in parts))


def env_duration_ms(env: Mapping[str, str], name: str) -> int | None:
    """A duration setting (`30d`); None when unset or empty."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    ms = duration_ms(raw)
    if ms is None:
        raise SettingsError(f"{name}={raw!r}: {DURATION_HINT}")
    return ms


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: expected a whole number >= {minimum}")
    return value


def env_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else default


def data_dir(env: Mapping[str, str]) -> Path:
    """`SAGA_DATA_DIR`, the folder of every SQLite file (default ./var)."""
    return env_path(env, "SAGA_DATA_DIR", Path("var"))


def env_synchronous(env: Mapping[str, str]) -> Synchronous:
    """`SAGA_SQLITE_SYNCHRONOUS`: FULL (survives power loss, the default) or NORMAL (a
    process crash only). OFF is refused: it could lose what was acknowledged."""
    raw = (env.get("SAGA_SQLITE_SYNCHRONOUS") or "FULL").strip().upper()
    if raw not in (Synchronous.FULL, Synchronous.NORMAL):
        raise SettingsError(f"SAGA_SQLITE_SYNCHRONOUS={raw!r}: expected FULL or NORMAL")
    return Synchronous(raw)
