"""Named crash points at every durable boundary of the runner, for tests only.

`SAGA_CRASH_AT=POINT[:STEP][#N]` makes the process SIGKILL itself (no cleanup, no
flush: exactly a crash) the Nth time (default 1st) it reaches POINT, for STEP if given.
It is honoured only when `SAGA_ENV=test`; set without it, the process refuses to start,
so a stray variable in production is loud instead of deadly.

`CRASH_POINTS` lists every point; tests enumerate it, so a point added here is covered
by the crash-point matrix without editing a list by hand.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from engine.config import SettingsError

__all__ = ["CRASH_POINTS", "STEP_POINTS", "CrashPoints"]

# Points reached while driving one step (or its compensation); they take a STEP filter.
STEP_POINTS: Final = (
    "before_intent",  # the call is decided; its intent is not durable yet
    "after_intent",  # the intent is durable; the call is not made yet
    "after_call",  # the call returned (success, refusal or error); its outcome not durable
    "before_comp_intent",
    "after_comp_intent",
    "after_comp_call",
)
# Points of the saga as a whole.
SAGA_POINTS: Final = (
    "after_create",  # the saga is durable and acknowledged; nothing has run
    "before_finish",  # the last outcome is known; the terminal status is not durable
    "after_finish",  # the terminal status is durable
)
CRASH_POINTS: Final = STEP_POINTS + SAGA_POINTS


@dataclass(slots=True)
class CrashPoints:
    point: str | None = None
    step: str | None = None
    nth: int = 1
    _hits: int = field(default=0, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CrashPoints:
        raw = env.get("SAGA_CRASH_AT", "").strip()
        if not raw:
            return cls()
        if env.get("SAGA_ENV") != "test":
            raise SettingsError(
                "SAGA_CRASH_AT is set but SAGA_ENV is not 'test': crash points are for tests "
                "only; unset SAGA_CRASH_AT"
            )
        spec, _, nth_text = raw.partition("#")
        point, _, step = spec.partition(":")
        if point not in CRASH_POINTS:
            raise SettingsError(f"SAGA_CRASH_AT={raw!r}: unknown point; one of {CRASH_POINTS}")
        if step and point not in STEP_POINTS:
            raise SettingsError(f"SAGA_CRASH_AT={raw!r}: {point} takes no step")
        try:
            nth = int(nth_text) if nth_text else 1
        except ValueError:
            raise SettingsError(f"SAGA_CRASH_AT={raw!r}: #N must be a number") from None
        return cls(point, step or None, max(1, nth))

    @property
    def armed(self) -> bool:
        return self.point is not None

    def hit(self, point: str, step: str = "") -> None:
        if self.point != point or (self.step is not None and self.step != step):
            return
        self._hits += 1
        if self._hits >= self.nth:
            os.kill(os.getpid(), signal.SIGKILL)
