"""The overview's chart: sagas accepted and finished per minute over the last hour, as SVG
coordinates computed here (no chart library, nothing for the browser to run)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from engine.saga_log import MINUTE_MS, MinuteCounts, minute_of

__all__ = ["CHART_H", "CHART_W", "MINUTES", "Chart", "chart"]

MINUTES: Final = 60
CHART_W: Final = 600.0
CHART_H: Final = 120.0
_SLOT: Final = CHART_W / MINUTES


@dataclass(frozen=True, slots=True)
class Column:
    """One minute: two bars side by side (accepted, finished), in SVG units."""

    minute_ms: int
    created: int
    finished: int
    x: float
    created_h: float
    finished_h: float
    width: float

    @property
    def created_y(self) -> float:
        return CHART_H - self.created_h

    @property
    def finished_y(self) -> float:
        return CHART_H - self.finished_h

    @property
    def finished_x(self) -> float:
        return self.x + self.width


@dataclass(frozen=True, slots=True)
class Chart:
    columns: tuple[Column, ...]
    peak: int  # the largest count of a minute: the chart's top
    created: int  # totals over the hour
    finished: int
    start_ms: int


def chart(counts: Sequence[MinuteCounts], now_ms: int) -> Chart:
    """The last MINUTES minutes up to and including the current one; a minute the log has
    no row for is an empty column."""
    first = minute_of(now_ms) - (MINUTES - 1) * MINUTE_MS
    by_minute = {c.minute_ms: c for c in counts}
    rows = [by_minute.get(first + i * MINUTE_MS, MinuteCounts(first + i * MINUTE_MS))
            for i in range(MINUTES)]  # fmt: skip
    peak = max([max(r.created, r.completed + r.compensated) for r in rows] + [1])
    width = _SLOT * 0.4
    columns = tuple(
        Column(
            minute_ms=r.minute_ms,
            created=r.created,
            finished=r.completed + r.compensated,
            x=i * _SLOT + _SLOT * 0.1,
            created_h=r.created / peak * CHART_H,
            finished_h=(r.completed + r.compensated) / peak * CHART_H,
            width=width,
        )
        for i, r in enumerate(rows)
    )
    return Chart(
        columns,
        peak,
        sum(c.created for c in columns),
        sum(c.finished for c in columns),
        first,
    )
