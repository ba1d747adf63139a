"""The operator tools' pure half: parsing, what the engine would do next, dry-run
previews, summaries and the text layout. No files, no processes, no clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.definition import StepContext
from engine.saga_log import SagaRecord
from orders.errors import NoParticipants
from orders.model import ORDER_SAGA
from orders.saga import order_saga_shape
from saga.errors import OpsInputError
from saga.ops_model import (
    ListedSaga,
    NextAction,
    Outcome,
    OutcomeKind,
    Verb,
    build_filter,
    human_duration,
    parse_duration_ms,
    parse_statuses,
    preview,
    rfc3339,
    saga_view,
    summarize,
    what_next,
)
from saga.ops_text import ls_table, show_text, summary_text, table
from tests.support.stack import order

DEFS = {ORDER_SAGA: order_saga_shape()}
NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def rec(
    status: SagaStatus = SagaStatus.RUNNING,
    *,
    owner: str | None = None,
    lease_ms: int = 0,
    definition: str = ORDER_SAGA,
    reason: str | None = None,
) -> SagaRecord:
    return SagaRecord(
        id="o-1",
        definition=definition,
        status=status,
        payload=b"{}",
        idempotency_key=None,
        payload_digest="",
        owner=owner,
        lease_expires_ms=lease_ms,
        epoch=3,
        trace_id=None,
        reason=reason,
        created_ms=NOW - 90_000,
        updated_ms=NOW - 1_000,
    )


def t(step: str, phase: Phase, attempt: int = 1, error: str | None = None) -> Transition:
    return Transition(step, phase, attempt, error)


def done(*steps: str) -> list[Transition]:
    out = []
    for s in steps:
        out += [t(s, Phase.INTENT), t(s, Phase.DONE)]
    return out


# ---- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("1.5h", 5_400_000),
        ("250ms", 250),
        (" 10M ", 600_000),
        ("1w", 604_800_000),
        ("0s", 0),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text, option="--older-than") == ms


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "1h-30m", "-5m", "5 m x", "1.h", "h"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(OpsInputError, match="--newer-than"):
        parse_duration_ms(text, option="--newer-than")


def test_statuses_any_case_once_each() -> None:
    assert parse_statuses(["running", "Needs_Attention", "RUNNING"]) == (
        SagaStatus.RUNNING,
        SagaStatus.NEEDS_ATTENTION,
    )
    with pytest.raises(OpsInputError, match="one of RUNNING, COMPENSATING"):
        parse_statuses(["done"])


def test_filter_ages_count_from_now() -> None:
    flt = build_filter(
        statuses=["completed"], older_than="5m", newer_than="1h", definition="order", now_ms=NOW
    )
    assert flt.created_before_ms == NOW - 300_000
    assert flt.created_after_ms == NOW - 3_600_000
    assert flt.statuses == (SagaStatus.COMPLETED,)
    assert flt.definition == "order"
    with pytest.raises(OpsInputError, match="select nothing"):
        build_filter(statuses=[], older_than="1h", newer_than="5m", definition=None, now_ms=NOW)


def test_times() -> None:
    assert rfc3339(NOW + 7) == "2025-11-24T16:00:00.007Z"
    assert [human_duration(ms) for ms in (-5, 850, 4_200, 45_000, 185_000, 7_800_000)] == [
        "0ms",
        "850ms",
        "4.2s",
        "45s",
        "3m05s",
        "2h10m",
    ]
    assert human_duration(3 * 86_400_000 + 4 * 3_600_000) == "3d04h"


# ---- what the engine would do next ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "log", "action", "text"),
    [
        (SagaStatus.RUNNING, [], NextAction.CALL, "call create_order (attempt 1)"),
        (
            SagaStatus.RUNNING,
            [
                *done("create_order"),
                t("reserve_stock", Phase.INTENT),
                t("reserve_stock", Phase.ERROR, error="x"),
                t("reserve_stock", Phase.INTENT, 2),
            ],
            NextAction.CALL,
            "call reserve_stock (attempt 3)",
        ),
        (
            SagaStatus.RUNNING,
            [
                *done("create_order"),
                t("reserve_stock", Phase.INTENT),
                t("reserve_stock", Phase.REFUSED, error="out_of_stock"),
            ],
            NextAction.START_COMPENSATION,
            "start compensating (out_of_stock)",
        ),
        (
            SagaStatus.COMPENSATING,
            [*done("create_order"), t("", Phase.COMPENSATE, 0, "cancelled_by_operator")],
            NextAction.COMPENSATE,
            "compensate create_order (attempt 1)",
        ),
        (
            SagaStatus.RUNNING,
            done("create_order", "reserve_stock", "charge_payment", "confirm_order"),
            NextAction.FINISH,
            "finish COMPLETED",
        ),
        (
            SagaStatus.COMPLETED,
            [
                *done("create_order", "reserve_stock", "charge_payment", "confirm_order"),
                t("", Phase.COMPLETED, 0),
            ],
            NextAction.NOTHING,
            "nothing: it ended COMPLETED",
        ),
        (
            SagaStatus.RUNNING,
            [t("", Phase.CLAIMED, n) for n in range(2, 20)],
            NextAction.PARK,
            "park it for an operator: claimed 18 times without progress",
        ),
        (
            SagaStatus.NEEDS_ATTENTION,
            [
                *done("create_order", "reserve_stock"),
                t("charge_payment", Phase.INTENT),
                t("", Phase.PARKED, 0, "why"),
            ],
            NextAction.NOTHING,
            "nothing: parked, needs an operator (saga retry o-1)",
        ),
        (
            SagaStatus.NEEDS_ATTENTION,
            [*done("create_order"), t("", Phase.PARKED, 0, "why")],
            NextAction.NOTHING,
            "nothing: parked, needs an operator (saga retry o-1, or saga cancel o-1)",
        ),
    ],
)
def test_what_next_is_the_cores_decision(
    status: SagaStatus, log: Sequence[Transition], action: NextAction, text: str
) -> None:
    nxt = what_next(rec(status), log, DEFS)
    assert (nxt.action, nxt.text) == (action, text)


def test_what_next_when_this_program_cannot_fold_the_log() -> None:
    other = what_next(rec(definition="refund"), [], DEFS)
    assert other.action is NextAction.UNKNOWN
    assert "'refund' is not known" in other.text
    odd = what_next(rec(), [t("ship_it", Phase.INTENT)], DEFS)
    assert odd.action is NextAction.UNKNOWN
    assert "ship_it" in odd.text


def test_the_shape_has_the_steps_but_no_clients() -> None:
    defn = order_saga_shape()
    assert [s.name for s in defn.steps] == [
        "create_order",
        "reserve_stock",
        "charge_payment",
        "confirm_order",
    ]
    payload = order(5_000).to_payload()
    ctx = StepContext(saga_id="o-1", payload=payload, epoch=1, attempt=1, step="reserve_stock")

    async def call() -> None:
        await defn.steps[1].action(ctx)

    with pytest.raises(NoParticipants):
        asyncio.run(call())


# ---- previews and summaries -------------------------------------------------------------


def test_preview_answers_as_the_change_would() -> None:
    parked_after_pivot = [
        *done("create_order", "reserve_stock"),
        t("charge_payment", Phase.INTENT),
        t("", Phase.PARKED, 0, "why"),
    ]
    assert preview(Verb.RETRY, rec(), parked_after_pivot, DEFS) is None
    refusal = preview(Verb.CANCEL, rec(), parked_after_pivot, DEFS)
    assert refusal is not None
    assert refusal.code == "past_pivot"
    assert preview(Verb.CANCEL, rec(), done("create_order"), DEFS) is None
    not_parked = preview(Verb.RETRY, rec(), done("create_order"), DEFS)
    assert not_parked is not None
    assert not_parked.code == "not_parked"
    unknown = preview(Verb.RETRY, rec(definition="refund"), [], DEFS)
    assert unknown is not None
    assert unknown.code == "unreadable"


def test_summary_groups_each_distinct_answer() -> None:
    outcomes = [
        Outcome("a", OutcomeKind.DONE),
        Outcome("b", OutcomeKind.REFUSED, "past_pivot", "past its pivot"),
        Outcome("c", OutcomeKind.REFUSED, "past_pivot", "past its pivot"),
        Outcome("d", OutcomeKind.FAILED, "storage_unavailable", "disk full"),
        *(Outcome(f"e{i}", OutcomeKind.REFUSED, "saga_finished", "ended") for i in range(7)),
    ]
    summary = summarize(outcomes)
    assert summary.done == ("a",)
    assert summary.count(OutcomeKind.REFUSED) == 9
    assert summary.count(OutcomeKind.FAILED) == 1
    text = summary_text(Verb.CANCEL, summary).splitlines()
    assert text[0] == "cancelled 1, refused 9, failed 1"
    assert text[1:] == [
        "  failed 1, storage_unavailable (disk full):",
        "    d",
        "  refused 2, past_pivot (past its pivot):",
        "    b, c",
        "  refused 7, saga_finished (ended):",
        "    e0, e1, e2, e3, e4, … (2 more)",
    ]


# ---- text -------------------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    assert table(("A", "BB", "C"), [("xyz", "1", "last"), ("q", "22", "")]).splitlines() == [
        "A    BB  C",
        "xyz  1   last",
        "q    22",
    ]


def test_ls_table_marks_an_expired_lease() -> None:
    rows = [
        ListedSaga.of(rec(owner="gw@a", lease_ms=NOW + 5_000), NOW),
        ListedSaga.of(rec(owner="gw@b", lease_ms=NOW - 5_000), NOW),
        ListedSaga.of(rec(SagaStatus.COMPLETED, owner="gw@c", lease_ms=NOW - 5_000), NOW),
    ]
    lines = ls_table(rows, NOW).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "DEFINITION", "AGE", "EPOCH", "OWNER", "REASON"]
    assert "gw@a  " in lines[1]
    assert "(lease expired)" not in lines[1]
    assert "gw@b (lease expired)" in lines[2]
    assert "(lease expired)" not in lines[3]  # a finished saga needs no lease


def test_show_text_has_the_state_the_next_step_and_the_timeline() -> None:
    log = [
        Transition("", Phase.CREATED, 1, at_ms=NOW - 90_000, seq=1),
        Transition("create_order", Phase.INTENT, 1, at_ms=NOW - 89_000, seq=2),
        Transition("create_order", Phase.ERROR, 1, "order UNAVAILABLE", "t1", NOW - 88_500, 3),
    ]
    view = saga_view(rec(owner="gw@a", lease_ms=NOW + 5_000), log, DEFS, NOW)
    text = show_text(view)
    assert "next      call create_order (attempt 2), by gw@a (lease until" in text
    assert "lease     2025-11-24T16:00:05.000Z (live)" in text
    steps = text.split("\n\n")[1].splitlines()
    assert steps[0].split() == ["SEQ", "AT", "+PREV", "STEP", "PHASE", "ATTEMPT", "TRACE", "ERROR"]
    assert steps[3].split()[1:] == [
        "2025-11-24T15:58:31.500Z",
        "+500ms",
        "create_order",
        "error",
        "1",
        "t1",
        "order",
        "UNAVAILABLE",
    ]
    doc = view.to_json()
    assert doc["next"] == {
        "action": "call",
        "step": "create_order",
        "attempt": 2,
        "text": "call create_order (attempt 2)",
        "by": "gw@a (lease until 2025-11-24T16:00:05.000Z)",
    }
    unowned = saga_view(rec(), log, DEFS, NOW)
    assert unowned.driver == "the next gateway or recovery daemon to claim it"
