"""The operator commands' text output: aligned tables, a saga's timeline, a bulk change's
summary. Pure string building over the values of `saga.ops_model`; the commands print it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from engine.core import ACTIVE_STATUSES
from saga.ops_model import ListedSaga, OutcomeKind, SagaView, Summary, Verb, human_duration, rfc3339

__all__ = ["ls_table", "shorten", "show_text", "summary_text", "table"]

REASON_WIDTH: Final = 60
IDS_SHOWN: Final = 5


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for cells in (headers, *rows):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return "\n".join(lines)


def _owner(row: ListedSaga, now_ms: int) -> str:
    if row.owner is None:
        return "-"
    if row.status in ACTIVE_STATUSES and not row.lease_live(now_ms):
        return f"{row.owner} (lease expired)"
    return row.owner


def ls_table(rows: Sequence[ListedSaga], now_ms: int) -> str:
    return table(
        ("ID", "STATUS", "DEFINITION", "AGE", "EPOCH", "OWNER", "REASON"),
        [
            (
                r.id,
                r.status.value,
                r.definition,
                human_duration(r.age_ms),
                str(r.epoch),
                _owner(r, now_ms),
                shorten(r.reason or "-", REASON_WIDTH),
            )
            for r in rows
        ],
    )


def _lease(row: ListedSaga, now_ms: int) -> str:
    if row.status not in ACTIVE_STATUSES:
        return f"- (a {row.status.value} saga is not driven)"
    if row.lease_expires_ms == 0 or row.owner is None:
        return "- (unowned: the next runner claims it)"
    state = "live" if row.lease_live(now_ms) else "expired"
    return f"{rfc3339(row.lease_expires_ms)} ({state})"


def show_text(view: SagaView) -> str:
    row, now = view.row, view.now_ms
    nxt = view.next.text + (f", by {view.driver}" if view.driver else "")
    head = [
        ("saga", f"{row.id} ({row.definition})"),
        ("status", row.status.value),
        ("reason", row.reason or "-"),
        ("created", f"{rfc3339(row.created_ms)} ({human_duration(row.age_ms)} ago)"),
        ("updated", rfc3339(row.updated_ms)),
        ("owner", row.owner or "-"),
        ("epoch", str(row.epoch)),
        ("lease", _lease(row, now)),
        ("trace", row.trace_id or "-"),
        ("next", nxt),
    ]
    steps = table(
        ("SEQ", "AT", "+PREV", "STEP", "PHASE", "ATTEMPT", "TRACE", "ERROR"),
        [
            (
                str(e.seq),
                rfc3339(e.at_ms),
                "-" if e.since_previous_ms is None else "+" + human_duration(e.since_previous_ms),
                e.step or "-",
                e.phase,
                str(e.attempt),
                e.trace_id or "-",
                e.error or "-",
            )
            for e in view.entries
        ],
    )
    if view.pruned_before is not None:
        head.append(
            ("history", f"pruned: transitions 1-{view.pruned_before - 1} deleted by saga prune")
        )
    return "\n".join(f"{k:<9} {v}" for k, v in head) + "\n\n" + steps


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:IDS_SHOWN])
    return shown + (f", … ({len(ids) - IDS_SHOWN} more)" if len(ids) > IDS_SHOWN else "")


def summary_text(verb: Verb, summary: Summary) -> str:
    done = summary.count(OutcomeKind.DONE)
    refused = summary.count(OutcomeKind.REFUSED)
    failed = summary.count(OutcomeKind.FAILED)
    lines = [f"{verb.past} {done}, refused {refused}, failed {failed}"]
    for kind, code, message, ids in summary.problems:
        lines.append(f"  {kind.value} {len(ids)}, {code} ({message}):")
        lines.append(f"    {_ids(ids)}")
    return "\n".join(lines)
