"""One contract, every adapter of the saga log port: SQLite (durable), PostgreSQL (a fresh
database on the machine's server, tests/support/pg.py) and the in-memory twin. A new
adapter joins by adding itself to the `log` fixture."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from engine.core import Phase, SagaStatus, Transition
from engine.errors import StaleEpoch
from engine.memory_log import MemorySagaLog
from engine.operations import prune_history
from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import (
    Change,
    IdempotencyKeyReused,
    InvalidCursor,
    MinuteCounts,
    NewSaga,
    Pruned,
    SagaFilter,
    SagaLog,
    SagaNotFound,
    SagaRecord,
)
from engine.sqlite import DbConfig
from engine.sqlite_log import SqliteSagaLog

NOW = 1_000_000


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaLog]:
    adapter: SagaLog
    if request.param == "sqlite":
        adapter = SqliteSagaLog.open(DbConfig(tmp_path / "saga.db"))
    elif request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        adapter = await PgSagaLog.open(parse_url(url, "SAGA_DATABASE_URL"))
    else:
        adapter = MemorySagaLog()
    yield adapter
    await adapter.close()


def new(i: int, key: str | None = None, payload: bytes = b"{}") -> NewSaga:
    return NewSaga(id=f"saga-{i}", definition="order", payload=payload, idempotency_key=key)


async def test_create_then_read(log: SagaLog) -> None:
    result = await log.create(new(1, "k1"), owner="a", lease_expires_ms=NOW + 10, now_ms=NOW)
    assert result.created
    rec = await log.get("saga-1")
    assert rec == result.record
    assert rec.status is SagaStatus.RUNNING and rec.epoch == 1 and rec.owner == "a"
    assert [t.phase for t in await log.transitions("saga-1")] == [Phase.CREATED]
    assert await log.get("nope") is None
    assert await log.transitions("nope") == []


async def test_a_create_writes_what_it_brings_after_created_and_only_if_it_creates(
    log: SagaLog,
) -> None:
    intent = Transition("s0", Phase.INTENT, 1, None, "ab" * 16)
    made = await asyncio.gather(
        *(
            log.create(new(i, f"k{i}"), owner="a", lease_expires_ms=NOW, now_ms=NOW, first=[intent])
            for i in range(5)
        )
    )  # several in one group commit, where the adapter batches
    assert all(r.created for r in made)
    for i in range(5):
        ts = await log.transitions(f"saga-{i}")
        assert [(t.step, t.phase, t.attempt, t.seq) for t in ts] == [
            ("", Phase.CREATED, 1, 1),
            ("s0", Phase.INTENT, 1, 2),
        ]
        assert ts[1].trace_id == "ab" * 16
    # The next append numbers on from it, at the saga's epoch 1.
    done = Transition("s0", Phase.DONE, 1)
    await log.append("saga-0", 1, [done], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    assert [t.seq for t in await log.transitions("saga-0")] == [1, 2, 3]
    # A replay of the key writes nothing of it.
    again = await log.create(
        new(9, "k0"), owner="b", lease_expires_ms=NOW, now_ms=NOW, first=[intent]
    )
    assert not again.created and again.record.id == "saga-0"
    assert len(await log.transitions("saga-0")) == 3


async def test_same_key_same_payload_is_the_same_saga(log: SagaLog) -> None:
    first = await log.create(new(1, "k"), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    again = await log.create(new(2, "k"), owner="b", lease_expires_ms=NOW, now_ms=NOW)
    assert not again.created and again.record.id == first.record.id
    assert await log.get("saga-2") is None


async def test_a_key_finds_the_saga_it_made(log: SagaLog) -> None:
    made = await log.create(new(1, "k"), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    await log.create(new(2), owner="a", lease_expires_ms=NOW, now_ms=NOW)  # no key
    assert await log.get_by_key("k") == made.record
    assert await log.get_by_key("other") is None


async def test_same_key_other_payload_is_refused(log: SagaLog) -> None:
    await log.create(new(1, "k", b"a"), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    with pytest.raises(IdempotencyKeyReused):
        await log.create(new(2, "k", b"b"), owner="a", lease_expires_ms=NOW, now_ms=NOW)


async def test_concurrent_creates_with_one_key_make_one_saga(log: SagaLog) -> None:
    results = await asyncio.gather(
        *(log.create(new(i, "k"), owner="a", lease_expires_ms=NOW, now_ms=NOW) for i in range(50))
    )
    assert sum(r.created for r in results) == 1
    assert len({r.record.id for r in results}) == 1
    page = await log.list_sagas(SagaFilter(), limit=100)
    assert len(page.items) == 1


async def test_append_is_fenced_by_epoch(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    intent = Transition("s0", Phase.INTENT, 1)
    await log.append("saga-1", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    with pytest.raises(StaleEpoch):
        await log.append(
            "saga-1", 0, [Transition("s0", Phase.DONE, 1)],
            status=SagaStatus.RUNNING, reason=None, now_ms=NOW,
        )  # fmt: skip
    with pytest.raises(SagaNotFound):
        await log.append("nope", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    ts = await log.transitions("saga-1")
    assert [(t.step, t.phase, t.seq) for t in ts] == [
        ("", Phase.CREATED, 1),
        ("s0", Phase.INTENT, 2),
    ]


async def test_one_stale_or_broken_write_fails_alone_among_concurrent_ones(log: SagaLog) -> None:
    """Appends that meet in one group commit are fenced and checked each on its own: a
    stale writer, an unknown saga and a fact recorded twice fail, the others are written."""
    for i in range(6):
        await log.create(new(i), owner="a", lease_expires_ms=NOW - 1, now_ms=NOW)
    await log.claim("b", limit=1, now_ms=NOW, lease_expires_ms=NOW + 50)  # saga-0: epoch 2
    intent = Transition("s0", Phase.INTENT, 1)
    await log.append("saga-1", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)

    async def step(saga_id: str, epoch: int, t: Transition) -> str:
        try:
            await log.append(
                saga_id, epoch, [t], status=SagaStatus.RUNNING, reason=None, now_ms=NOW
            )
        except StaleEpoch:
            return "stale"
        except SagaNotFound:
            return "not found"
        except Exception as exc:
            return "duplicate" if re.search(r"(?i)unique|duplicate", str(exc)) else repr(exc)
        return "ok"

    results = await asyncio.gather(
        step("saga-0", 1, intent),  # fenced: b claimed it
        step("saga-1", 1, intent),  # recorded already
        step("nope", 1, intent),
        *(step(f"saga-{i}", 1, intent) for i in range(2, 6)),
    )
    assert results == ["stale", "duplicate", "not found", "ok", "ok", "ok", "ok"]
    for i in range(2, 6):
        assert [t.phase for t in await log.transitions(f"saga-{i}")] == [
            Phase.CREATED,
            Phase.INTENT,
        ]
    assert [t.phase for t in await log.transitions("saga-0")] == [Phase.CREATED, Phase.CLAIMED]
    assert len(await log.transitions("saga-1")) == 2


async def test_a_fact_is_recorded_once(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    intent = Transition("s0", Phase.INTENT, 1)
    await log.append("saga-1", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await log.append("saga-1", 1, [intent], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    assert len(await log.transitions("saga-1")) == 2


async def test_status_and_reason_follow_appends(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    await log.append(
        "saga-1", 1, [Transition("", Phase.COMPENSATE, 0, "out_of_stock")],
        status=SagaStatus.COMPENSATING, reason="out_of_stock", now_ms=NOW + 5,
    )  # fmt: skip
    rec = await log.get("saga-1")
    assert rec is not None
    assert (rec.status, rec.reason, rec.updated_ms) == (
        SagaStatus.COMPENSATING,
        "out_of_stock",
        NOW + 5,
    )


async def test_claim_takes_unowned_and_expired_oldest_first(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW + 100, now_ms=NOW)  # live lease
    await log.create(new(2), owner="a", lease_expires_ms=NOW - 1, now_ms=NOW)  # expired
    await log.create(new(3), owner=None, lease_expires_ms=0, now_ms=NOW)  # queued
    await log.create(new(4), owner=None, lease_expires_ms=0, now_ms=NOW)
    taken = await log.claim("b", limit=2, now_ms=NOW, lease_expires_ms=NOW + 50)
    assert [t.record.id for t in taken] == ["saga-2", "saga-3"]
    for t in taken:
        assert t.record.owner == "b" and t.record.epoch == 2
        assert t.transitions[-1].phase is Phase.CLAIMED
    # what is claimed is not claimable again while the lease lives
    rest = await log.claim("c", limit=10, now_ms=NOW, lease_expires_ms=NOW + 50)
    assert [t.record.id for t in rest] == ["saga-4"]
    assert await log.count_claimable(now_ms=NOW) == 0
    assert await log.count_claimable(now_ms=NOW + 101) == 4


async def test_the_old_owner_is_fenced_after_a_claim(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW - 1, now_ms=NOW)
    await log.claim("b", limit=1, now_ms=NOW, lease_expires_ms=NOW + 50)
    with pytest.raises(StaleEpoch):
        await log.append(
            "saga-1", 1, [Transition("s0", Phase.INTENT, 1)],
            status=SagaStatus.RUNNING, reason=None, now_ms=NOW,
        )  # fmt: skip


async def test_finished_and_parked_sagas_are_not_claimed(log: SagaLog) -> None:
    for i, status in enumerate([SagaStatus.COMPLETED, SagaStatus.NEEDS_ATTENTION]):
        await log.create(new(i), owner=None, lease_expires_ms=0, now_ms=NOW)
        await log.append(f"saga-{i}", 1, [], status=status, reason=None, now_ms=NOW)
    assert await log.claim("b", limit=10, now_ms=NOW, lease_expires_ms=NOW) == []


async def test_a_parked_saga_resumed_is_claimed_in_creation_order(log: SagaLog) -> None:
    await log.create(new(1), owner=None, lease_expires_ms=0, now_ms=NOW)
    await log.append("saga-1", 1, [], status=SagaStatus.NEEDS_ATTENTION, reason="x", now_ms=NOW)
    await log.create(new(2), owner=None, lease_expires_ms=0, now_ms=NOW)

    def resume(rec: SagaRecord, ts: Sequence[Transition]) -> Change:
        return Change((Transition("", Phase.RESUMED, 1, "op"),), SagaStatus.RUNNING, None)

    await log.change("saga-1", resume, now_ms=NOW, actor="op")  # older, active again
    taken = await log.claim("b", limit=10, now_ms=NOW, lease_expires_ms=NOW + 50)
    assert [t.record.id for t in taken] == ["saga-1", "saga-2"]
    assert await log.oldest_unfinished_ms() == NOW


async def test_renew_and_release_in_bulk(log: SagaLog) -> None:
    for i in range(3):
        await log.create(new(i), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    await log.create(new(9), owner="z", lease_expires_ms=NOW, now_ms=NOW)
    assert await log.renew("a", lease_expires_ms=NOW + 1000) == 3
    assert await log.count_claimable(now_ms=NOW + 10) == 1  # only z's expired
    assert await log.release("a", ["saga-0"]) == 1
    assert await log.release("a") == 2
    recs = [await log.get(f"saga-{i}") for i in range(3)]
    assert all(r is not None and r.owner is None for r in recs)


async def test_change_appends_bumps_epoch_and_unowns(log: SagaLog) -> None:
    await log.create(new(1), owner="a", lease_expires_ms=NOW + 999, now_ms=NOW)

    def fn(rec: SagaRecord, ts: Sequence[Transition]) -> Change:
        assert [t.phase for t in ts] == [Phase.CREATED]
        return Change(
            (Transition("", Phase.COMPENSATE, 0, "cancelled_by_operator"),),
            SagaStatus.COMPENSATING,
            "cancelled_by_operator",
        )

    rec = await log.change("saga-1", fn, now_ms=NOW, actor="op")
    assert (rec.owner, rec.epoch, rec.status) == (None, 2, SagaStatus.COMPENSATING)
    assert (await log.transitions("saga-1"))[-1].phase is Phase.COMPENSATE
    with pytest.raises(StaleEpoch):  # whoever drove it at epoch 1 is fenced
        await log.append("saga-1", 1, [], status=SagaStatus.RUNNING, reason=None, now_ms=NOW)
    with pytest.raises(SagaNotFound):
        await log.change("nope", fn, now_ms=NOW, actor="op")

    def refuse(rec: SagaRecord, ts: Sequence[Transition]) -> Change:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await log.change("saga-1", refuse, now_ms=NOW, actor="op")
    after = await log.get("saga-1")
    assert after is not None and after.epoch == 2, "a refused change changes nothing"


async def test_every_transition_carries_a_trace_its_own_or_the_saga_s(log: SagaLog) -> None:
    saga_trace, attempt_trace = "a" * 32, "b" * 32
    traced = NewSaga("saga-1", "order", b"{}", trace_id=saga_trace)
    await log.create(traced, owner="a", lease_expires_ms=NOW - 1, now_ms=NOW)
    await log.create(new(2), owner="a", lease_expires_ms=NOW - 1, now_ms=NOW)  # no trace
    await log.append(
        "saga-1", 1, [Transition("s0", Phase.INTENT, 1, None, attempt_trace),
                      Transition("", Phase.COMPENSATE, 0, "why")],
        status=SagaStatus.COMPENSATING, reason="why", now_ms=NOW,
    )  # fmt: skip
    await log.claim("b", limit=2, now_ms=NOW, lease_expires_ms=NOW + 50)

    def resume(rec: SagaRecord, ts: Sequence[Transition]) -> Change:
        return Change((Transition("", Phase.RESUMED, 0, "op"),), SagaStatus.COMPENSATING, None)

    await log.change("saga-1", resume, now_ms=NOW, actor="op")
    phases_traces = [(t.phase, t.trace_id) for t in await log.transitions("saga-1")]
    assert phases_traces == [
        (Phase.CREATED, saga_trace),
        (Phase.INTENT, attempt_trace),  # its own
        (Phase.COMPENSATE, saga_trace),
        (Phase.CLAIMED, saga_trace),
        (Phase.RESUMED, saga_trace),
    ]
    assert {t.trace_id for t in await log.transitions("saga-2")} == {None}


async def test_pages_newest_first_with_filters(log: SagaLog) -> None:
    for i in range(7):
        await log.create(new(i), owner=None, lease_expires_ms=0, now_ms=NOW + i)
    await log.append("saga-3", 1, [], status=SagaStatus.COMPLETED, reason=None, now_ms=NOW)
    first = await log.list_sagas(SagaFilter(), limit=3)
    assert [r.id for r in first.items] == ["saga-6", "saga-5", "saga-4"]
    assert first.next_cursor is not None
    second = await log.list_sagas(SagaFilter(), limit=3, cursor=first.next_cursor)
    assert [r.id for r in second.items] == ["saga-3", "saga-2", "saga-1"]
    last = await log.list_sagas(SagaFilter(), limit=3, cursor=second.next_cursor)
    assert [r.id for r in last.items] == ["saga-0"] and last.next_cursor is None
    done = await log.list_sagas(SagaFilter(statuses=(SagaStatus.COMPLETED,)), limit=10)
    assert [r.id for r in done.items] == ["saga-3"]
    window = await log.list_sagas(
        SagaFilter(created_after_ms=NOW + 2, created_before_ms=NOW + 4), limit=10
    )
    assert [r.id for r in window.items] == ["saga-3", "saga-2"]
    with pytest.raises(InvalidCursor):
        await log.list_sagas(SagaFilter(), limit=3, cursor="garbage")


async def test_sagas_are_found_by_an_indexed_field_of_their_payload(log: SagaLog) -> None:
    payloads = [
        b'{"customer_id":"c1","items":[]}',
        b'{"customer_id":"c2"}',
        b"not json",
        b'["customer_id","c1"]',
        b'{"customer_id":"c1"}',
        b'{"customer_id":"c1","note":"<b>"}',
    ]
    for i, payload in enumerate(payloads):
        await log.create(new(i, payload=payload), owner=None, lease_expires_ms=0, now_ms=NOW)
    first = await log.list_by_payload_field("customer_id", "c1", limit=2)
    assert [r.id for r in first.items] == ["saga-5", "saga-4"]
    rest = await log.list_by_payload_field("customer_id", "c1", limit=2, cursor=first.next_cursor)
    assert [r.id for r in rest.items] == ["saga-0"] and rest.next_cursor is None
    assert (await log.list_by_payload_field("customer_id", "c3", limit=5)).items == ()
    with pytest.raises(ValueError, match="not searchable"):
        await log.list_by_payload_field("note", "<b>", limit=5)
    with pytest.raises(InvalidCursor):
        await log.list_by_payload_field("customer_id", "c1", limit=2, cursor="garbage")


async def test_counts_per_minute_follow_creates_and_finishes(log: SagaLog) -> None:
    minute = 60_000
    t0 = 1_700_000_000_000 // minute * minute  # a minute's start
    assert await log.count_per_minute(since_ms=0) == []
    for i in range(3):
        await log.create(new(i), owner="a", lease_expires_ms=0, now_ms=t0 + i)
    await log.create(new(3), owner="a", lease_expires_ms=0, now_ms=t0 + minute + 5)
    await log.create(new(4, "k"), owner="a", lease_expires_ms=0, now_ms=t0 + 2 * minute)
    await log.create(new(5, "k"), owner="a", lease_expires_ms=0, now_ms=t0 + 2 * minute)  # replay
    done, comp = SagaStatus.COMPLETED, SagaStatus.COMPENSATED
    await log.append("saga-0", 1, [], status=done, reason=None, now_ms=t0 + minute)
    await log.append("saga-1", 1, [], status=SagaStatus.COMPENSATING, reason="x", now_ms=t0 + 7)
    await log.append("saga-1", 1, [], status=comp, reason="x", now_ms=t0 + 3 * minute)
    await log.append("saga-2", 1, [], status=SagaStatus.NEEDS_ATTENTION, reason="y", now_ms=t0)
    assert await log.count_per_minute(since_ms=t0 + 30_000) == [
        MinuteCounts(t0, created=3),
        MinuteCounts(t0 + minute, created=1, completed=1),
        MinuteCounts(t0 + 2 * minute, created=1),
        MinuteCounts(t0 + 3 * minute, compensated=1),
    ]
    assert await log.count_per_minute(since_ms=t0 + 3 * minute) == [
        MinuteCounts(t0 + 3 * minute, compensated=1)
    ]


async def test_counts_and_oldest(log: SagaLog) -> None:
    assert await log.oldest_unfinished_ms() is None
    await log.create(new(1), owner=None, lease_expires_ms=0, now_ms=NOW)
    await log.create(new(2), owner=None, lease_expires_ms=0, now_ms=NOW + 5)
    await log.append("saga-1", 1, [], status=SagaStatus.COMPLETED, reason=None, now_ms=NOW)
    assert await log.oldest_unfinished_ms() == NOW + 5
    counts = await log.count_by_status()
    assert counts[SagaStatus.COMPLETED] == 1 and counts[SagaStatus.RUNNING] == 1


async def test_counts_follow_every_status_change(log: SagaLog) -> None:
    async def matches_a_full_count() -> None:
        page = await log.list_sagas(SagaFilter(), limit=100)
        expected = {s: sum(r.status is s for r in page.items) for s in SagaStatus}
        assert await log.count_by_status() == expected

    for i in range(5):
        await log.create(new(i), owner="a", lease_expires_ms=NOW + 9, now_ms=NOW)
    await log.create(new(9, "k"), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    await log.create(new(10, "k"), owner="a", lease_expires_ms=NOW, now_ms=NOW)  # a replay
    await matches_a_full_count()
    for saga_id, status in [
        ("saga-0", SagaStatus.COMPLETED),
        ("saga-1", SagaStatus.COMPENSATING),
        ("saga-1", SagaStatus.COMPENSATING),  # unchanged
        ("saga-1", SagaStatus.COMPENSATED),
        ("saga-2", SagaStatus.NEEDS_ATTENTION),
    ]:
        await log.append(saga_id, 1, [], status=status, reason=None, now_ms=NOW)
        await matches_a_full_count()

    def resume(rec: SagaRecord, ts: Sequence[Transition]) -> Change:
        return Change((Transition("", Phase.RESUMED, 0, "op"),), SagaStatus.RUNNING, None)

    await log.change("saga-2", resume, now_ms=NOW, actor="op")
    await matches_a_full_count()
    assert (await log.count_by_status())[SagaStatus.RUNNING] == 4


async def finish(log: SagaLog, i: int, status: SagaStatus, *, created: int, at: int) -> None:
    await log.create(new(i), owner="a", lease_expires_ms=NOW, now_ms=created)
    end = {
        SagaStatus.COMPLETED: Transition("", Phase.COMPLETED),
        SagaStatus.COMPENSATED: Transition("", Phase.COMPENSATED),
        SagaStatus.NEEDS_ATTENTION: Transition("", Phase.PARKED, error="stuck"),
        SagaStatus.RUNNING: Transition("s1", Phase.INTENT, 2),
    }[status]
    steps = [Transition("s0", Phase.INTENT, 1), Transition("s0", Phase.DONE, 1), end]
    await log.append(f"saga-{i}", 1, steps, status=status, reason=None, now_ms=at)


async def prune_all(log: SagaLog, before: int, *, dry_run: bool = False) -> tuple[int, int]:
    batches: list[Pruned] = []
    done = await prune_history(
        log, finished_before_ms=before, batch=2, dry_run=dry_run, on_batch=batches.append
    )
    # Two sagas a batch, in creation order: 1-2, 3-4, 5-7, 6 (created after the cutoff:
    # the scan ends there).
    assert [b.examined for b in batches] == [2, 2, 2, 1]
    assert [b.next_cursor is None for b in batches] == [False, False, False, True]
    return done.sagas, done.transitions


async def test_pruning_keeps_each_old_finished_saga_and_its_final_transition(
    log: SagaLog,
) -> None:
    cutoff = NOW + 500
    await finish(log, 1, SagaStatus.COMPLETED, created=NOW, at=NOW + 10)
    await finish(log, 2, SagaStatus.NEEDS_ATTENTION, created=NOW, at=NOW + 10)  # not finished
    await finish(log, 3, SagaStatus.COMPENSATED, created=NOW, at=NOW + 20)
    await finish(log, 4, SagaStatus.RUNNING, created=NOW, at=NOW + 30)
    await finish(log, 5, SagaStatus.COMPLETED, created=NOW, at=cutoff)  # finished too late
    # Marked finished by a writer whose log does not end in the finish: the kept
    # transition alone would not fold to "finished", so it is left whole.
    await log.create(new(7), owner="a", lease_expires_ms=NOW, now_ms=NOW)
    odd = [Transition("s0", Phase.INTENT, 1)]
    await log.append("saga-7", 1, odd, status=SagaStatus.COMPLETED, reason=None, now_ms=NOW)
    await finish(log, 6, SagaStatus.COMPLETED, created=cutoff + 1, at=cutoff + 2)
    before = {i: await log.get(f"saga-{i}") for i in range(1, 8)}
    logs = {i: await log.transitions(f"saga-{i}") for i in range(1, 8)}

    assert await prune_all(log, cutoff, dry_run=True) == (2, 6)
    assert {i: await log.transitions(f"saga-{i}") for i in range(1, 8)} == logs
    assert await prune_all(log, cutoff) == (2, 6)

    for i in range(1, 8):
        assert await log.get(f"saga-{i}") == before[i], "records stay as they were"
        kept = await log.transitions(f"saga-{i}")
        assert kept == (logs[i][-1:] if i in (1, 3) else logs[i]), i
    assert await log.count_by_status() == {
        SagaStatus.RUNNING: 1,
        SagaStatus.COMPENSATING: 0,
        SagaStatus.COMPLETED: 4,
        SagaStatus.COMPENSATED: 1,
        SagaStatus.NEEDS_ATTENTION: 1,
    }
    assert await prune_all(log, cutoff) == (0, 0), "a second run finds nothing left"
