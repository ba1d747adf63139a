"""The explorer's pure parts: the timeline of a saga's log (attempts, the pivot, the way
back, each change of owner), what an action would do, the chart, the list's input, and
SAGA_UI_TRACE_URL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.config import SettingsError
from engine.core import Phase, SagaStatus, Transition
from engine.saga_log import MinuteCounts, SagaRecord
from gateway.settings import GatewaySettings
from gateway.ui.overview import MINUTES, chart
from gateway.ui.query import UiInputError, parse_list_query
from gateway.ui.timeline import Attempt, Event, Outcome, action_preview, step_views, timeline
from orders.saga import order_saga_shape

DEFN = order_saga_shape()
T0 = 1_700_000_000_000


def record(status: SagaStatus = SagaStatus.RUNNING, **kw: object) -> SagaRecord:
    rec = SagaRecord(
        id="s1", definition="order", status=status, payload=b"{}", idempotency_key=None,
        payload_digest="", owner="gw-b", lease_expires_ms=T0 + 10_000, epoch=2,
        trace_id=None, reason=None, created_ms=T0, updated_ms=T0,
    )  # fmt: skip
    return replace(rec, **kw)  # type: ignore[arg-type]


def t(
    step: str, phase: Phase, attempt: int = 1, at: int = 0, error: str | None = None
) -> Transition:
    return Transition(step, phase, attempt, error, None, T0 + at)


RECOVERED = [
    t("", Phase.CREATED, at=0),
    t("create_order", Phase.INTENT, 1, 10),
    t("create_order", Phase.DONE, 1, 30),
    t("reserve_stock", Phase.INTENT, 1, 40),  # the owner dies here
    t("", Phase.CLAIMED, 2, 5_000, "by gw-b"),
    t("reserve_stock", Phase.INTENT, 2, 5_010),
    t("reserve_stock", Phase.ERROR, 2, 5_020, "UNAVAILABLE"),
    t("reserve_stock", Phase.INTENT, 3, 5_100),
    t("reserve_stock", Phase.DONE, 3, 5_150),
    t("charge_payment", Phase.INTENT, 1, 5_160),
    t("charge_payment", Phase.REFUSED, 1, 5_170, "payment_declined"),
    t("", Phase.COMPENSATE, 0, 5_171, "payment_declined"),
    t("reserve_stock", Phase.COMP_INTENT, 1, 5_180),
    t("reserve_stock", Phase.COMP_DONE, 1, 5_190),
]


def test_the_timeline_has_a_bar_per_attempt_and_marks_the_recovery() -> None:
    line = timeline(record(SagaStatus.COMPENSATING), RECOVERED, DEFN, T0 + 6_000)
    bars = [r for r in line.rows if isinstance(r, Attempt)]
    assert [(b.step, b.compensation, b.number, b.outcome) for b in bars] == [
        ("create_order", False, 1, Outcome.DONE),
        ("reserve_stock", False, 1, Outcome.LOST),  # its owner never said
        ("reserve_stock", False, 2, Outcome.ERROR),
        ("reserve_stock", False, 3, Outcome.DONE),
        ("charge_payment", False, 1, Outcome.REFUSED),
        ("reserve_stock", True, 1, Outcome.DONE),  # the way back
    ]
    assert [b.epoch for b in bars] == [1, 1, 2, 2, 2, 2]
    assert bars[4].pivot and not bars[0].pivot
    assert bars[1].duration_ms == 4_960 and bars[2].error == "UNAVAILABLE"
    (claim,) = [r for r in line.rows if isinstance(r, Event) and r.phase is Phase.CLAIMED]
    assert claim.recovery and claim.owner == "gw-b" and "recovery" in claim.text
    assert line.recoveries == 1 and line.owners == ("gw-b",)
    assert all(0 <= b.x <= b.x + b.width <= 1000 for b in bars)


def test_a_first_claim_of_a_queued_saga_is_not_a_recovery() -> None:
    log = [
        t("", Phase.CREATED),
        t("", Phase.CLAIMED, 2, 5, "by gw-a"),
        t("create_order", Phase.INTENT, 1, 6),
    ]
    line = timeline(record(), log, DEFN, T0 + 10)
    assert line.recoveries == 0
    (bar,) = [r for r in line.rows if isinstance(r, Attempt)]
    assert bar.outcome is Outcome.IN_FLIGHT and bar.duration_ms is None


def test_steps_show_where_each_stands() -> None:
    views = step_views(DEFN, RECOVERED)
    assert [(v.name, v.status.value, v.attempts, v.pivot) for v in views] == [
        ("create_order", "done", 1, False),
        ("reserve_stock", "done", 3, False),
        ("charge_payment", "refused", 1, True),
        ("confirm_order", "pending", 0, False),
    ]
    assert views[1].compensation.value == "done"


def test_an_action_says_what_it_would_do_or_why_not() -> None:
    before_pivot = RECOVERED[:9]
    cancel = action_preview("cancel", DEFN, before_pivot)
    assert cancel.allowed and "undo reserve_stock, then undo create_order" in cancel.text
    assert not action_preview("retry", DEFN, before_pivot).allowed
    past = [*RECOVERED[:10]]
    refused = action_preview("cancel", DEFN, past)
    assert not refused.allowed and "past_pivot" in refused.text
    parked = [*past, t("", Phase.PARKED, 0, 6_000, "charge_payment: 40 attempts failed")]
    retry = action_preview("retry", DEFN, parked)
    assert retry.allowed and "call charge_payment" in retry.text
    assert not action_preview("retry", None, parked).allowed  # unknown definition


def test_the_chart_covers_the_last_hour_minute_by_minute() -> None:
    now = T0 + 30_000
    minute = T0 // 60_000 * 60_000
    c = chart([MinuteCounts(minute, created=4, completed=1, compensated=1),
               MinuteCounts(minute - 60_000 * 90, created=99)], now)  # fmt: skip
    assert len(c.columns) == MINUTES and c.columns[-1].minute_ms == minute
    assert (c.created, c.finished, c.peak) == (4, 2, 4)
    assert c.columns[-1].created_h == 120.0 and c.columns[-1].finished_h == 60.0


@pytest.mark.parametrize(
    "params",
    [
        {"status": ["nope"]},
        {"limit": ["201"]},
        {"newer_than": ["1"]},
        {"x": ["1"]},
        {"q": ["a", "b"]},
        {"cursor": ["s1x"]},
    ],
)
def test_bad_list_input_is_refused(params: dict[str, list[str]]) -> None:
    from engine.saga_log import InvalidCursor

    with pytest.raises((UiInputError, InvalidCursor)):
        parse_list_query(params, {"order"}, T0)


def test_list_input_round_trips_through_its_links() -> None:
    q = parse_list_query(
        {"status": ["running", "RUNNING", "completed"], "newer_than": ["2h"], "limit": ["10"]},
        {"order"},
        T0,
    )
    assert q.statuses == (SagaStatus.RUNNING, SagaStatus.COMPLETED)
    assert q.to_filter(T0).created_after_ms == T0 - 7_200_000
    again = parse_list_query(
        {k: [v] for k, v in [p.split("=") for p in q.query_string().split("&")] if k != "status"}
        | {"status": ["RUNNING", "COMPLETED"]},
        {"order"},
        T0,
    )
    assert again == q


def test_the_trace_url_setting() -> None:
    url = "http://localhost:3000/explore?left=%7B%22queries%22:[{trace_id}]%7D"
    assert GatewaySettings.from_env({"SAGA_UI_TRACE_URL": url}).ui_trace_url == url
    assert GatewaySettings.from_env({}).ui_trace_url is None
    for bad in ("javascript:alert({trace_id})", "http://grafana/explore", "/relative/{trace_id}"):
        with pytest.raises(SettingsError, match="SAGA_UI_TRACE_URL"):
            GatewaySettings.from_env({"SAGA_UI_TRACE_URL": bad})


def test_an_operator_s_change_bumps_the_epoch_once_and_is_no_recovery() -> None:
    log = [
        t("", Phase.CREATED),
        t("create_order", Phase.INTENT, 1, 5),
        t("", Phase.PARKED, 0, 9, "stuck"),
        t("", Phase.COMPENSATE, 0, 20, "cancelled_by_operator"),
        t("", Phase.RESUMED, 0, 20, "cancelled by operator"),
        t("", Phase.CLAIMED, 3, 30, "by gw-c"),
    ]
    line = timeline(record(SagaStatus.COMPENSATING), log, DEFN, T0 + 40)
    events = [r for r in line.rows if isinstance(r, Event)]
    assert [(e.phase, e.epoch) for e in events[-3:]] == [
        (Phase.COMPENSATE, 2),
        (Phase.RESUMED, 2),
        (Phase.CLAIMED, 3),
    ]
    assert "operator's change" in events[-3].text
    assert line.recoveries == 0  # the operator left it unowned: a pickup, not a takeover
