"""A toy world of idempotent participants for engine tests, kept in a SQLite file so that
it outlives a killed process. Each step of a test saga is an "effect" on the world:

- `act` applies the effect once per (saga, step); a repeat returns the first answer;
- `undo` reverses it, or leaves a tombstone when it never arrived (the late act is then
  refused), exactly the contract the real services keep;
- faults: a step can refuse (business no), fail before the effect (transient), or apply
  the effect and then lose the response (transient, outcome unknown).

`check(saga_id, status)` states the end-to-end invariants the engine must leave behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.core import SagaStatus
from engine.definition import (
    Done,
    Refused,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepResult,
)
from engine.errors import TransientStepError
from engine.sqlite import DbConfig, Synchronous, migrate, open_connection, transaction

SCHEMA = (
    """
    CREATE TABLE effects (
        saga TEXT NOT NULL, step TEXT NOT NULL,
        applied INTEGER NOT NULL DEFAULT 0,   -- times the effect was applied (must be <= 1)
        undone INTEGER NOT NULL DEFAULT 0,
        tombstone INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        calls INTEGER NOT NULL DEFAULT 0,     -- every call that reached the participant
        PRIMARY KEY (saga, step)
    );
    """,
)

FAST = RetryPolicy(max_attempts=3, park_after=4, initial_backoff_s=0.001, max_backoff_s=0.005)


@dataclass
class Faults:
    refuse: set[str] = field(default_factory=set)
    fail_before: dict[str, int] = field(default_factory=dict)  # next N calls fail, no effect
    lose_after: dict[str, int] = field(default_factory=dict)  # next N calls: effect, no reply
    fail_undo: dict[str, int] = field(default_factory=dict)


class World:
    def __init__(self, path: Path, faults: Faults | None = None) -> None:
        self.conn = open_connection(DbConfig(path, synchronous=Synchronous.NORMAL))
        migrate(self.conn, SCHEMA)
        self.faults = faults or Faults()

    def _row(self, saga: str, step: str) -> tuple[int, int, int, int]:
        self.conn.execute("INSERT OR IGNORE INTO effects (saga, step) VALUES (?, ?)", (saga, step))
        row = self.conn.execute(
            "SELECT applied, undone, tombstone, refused FROM effects WHERE saga=? AND step=?",
            (saga, step),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    @staticmethod
    def _take(counter: dict[str, int], step: str) -> bool:
        if counter.get(step, 0) > 0:
            counter[step] -= 1
            return True
        return False

    async def act(self, ctx: StepContext) -> StepResult:
        if self._take(self.faults.fail_before, ctx.step):
            raise TransientStepError(f"{ctx.step} unavailable")
        with transaction(self.conn):
            applied, _undone, tombstone, refused = self._row(ctx.saga_id, ctx.step)
            self.conn.execute(
                "UPDATE effects SET calls = calls + 1 WHERE saga=? AND step=?",
                (ctx.saga_id, ctx.step),
            )
            if tombstone:
                result: StepResult = Refused("tombstone")
            elif refused or (not applied and ctx.step in self.faults.refuse):
                self.conn.execute(
                    "UPDATE effects SET refused = 1 WHERE saga=? AND step=?",
                    (ctx.saga_id, ctx.step),
                )
                result = Refused(f"{ctx.step}_refused")
            else:
                if not applied:
                    self.conn.execute(
                        "UPDATE effects SET applied = applied + 1 WHERE saga=? AND step=?",
                        (ctx.saga_id, ctx.step),
                    )
                result = Done()
        if self._take(self.faults.lose_after, ctx.step):
            raise TransientStepError(f"{ctx.step}: response lost")
        return result

    async def undo(self, ctx: StepContext) -> StepResult:
        if self._take(self.faults.fail_undo, ctx.step):
            raise TransientStepError(f"undo {ctx.step} unavailable")
        with transaction(self.conn):
            applied, undone, _t, _r = self._row(ctx.saga_id, ctx.step)
            if applied and not undone:
                self.conn.execute(
                    "UPDATE effects SET undone = 1 WHERE saga=? AND step=?",
                    (ctx.saga_id, ctx.step),
                )
            elif not applied:
                self.conn.execute(
                    "UPDATE effects SET tombstone = 1 WHERE saga=? AND step=?",
                    (ctx.saga_id, ctx.step),
                )
        return Done()

    def effects(self, saga: str) -> dict[str, tuple[int, int, int, int]]:
        rows = self.conn.execute(
            "SELECT step, applied, undone, tombstone, refused FROM effects WHERE saga=?",
            (saga,),
        ).fetchall()
        out: dict[str, tuple[int, int, int, int]] = {}
        for step, *counts in rows:
            a, u, t, r = (c if isinstance(c, int) else 0 for c in counts)
            out[str(step)] = (a, u, t, r)
        return out

    def check(self, defn: SagaDefinition, saga: str, status: SagaStatus) -> None:
        """The invariants: each effect at most once; a completed saga has every effect in
        place; a compensated one has nothing of its compensatable steps left in place."""
        effects = self.effects(saga)
        for name, (applied, _undone, _t, _r) in effects.items():
            assert applied <= 1, f"{saga}: {name} applied {applied} times"
        if status is SagaStatus.COMPLETED:
            for step in defn.steps:
                applied, undone, _t, _r = effects.get(step.name, (0, 0, 0, 0))
                assert applied == 1 and not undone, f"{saga}: {step.name} not in place"
        elif status is SagaStatus.COMPENSATED:
            for step in defn.steps:
                applied, undone, _t, _r = effects.get(step.name, (0, 0, 0, 0))
                if step.compensation is not None:
                    assert not applied or undone, f"{saga}: {step.name} left in place"
                else:
                    assert not applied, f"{saga}: {step.name} (no compensation) was applied"
        else:
            raise AssertionError(f"{saga} did not finish: {status}")


def definition(
    world: World,
    kinds: Sequence[StepKind] = (
        StepKind.COMPENSATABLE,
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
    ),
    *,
    policy: RetryPolicy = FAST,
    name: str = "toy",
) -> SagaDefinition:
    steps = tuple(
        Step(
            name=f"s{i}",
            action=world.act,
            compensation=world.undo if kind is StepKind.COMPENSATABLE else None,
            kind=kind,
            retry=policy,
            timeout_s=5.0,
        )
        for i, kind in enumerate(kinds)
    )
    return SagaDefinition(name, steps)
