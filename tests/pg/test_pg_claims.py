"""Two processes claiming from one PostgreSQL saga log at once, over 10,000 sagas nobody
owns: no saga is ever handed to both at one epoch, and each claim is in the log as the
CLAIMED transition of the owner it was handed to."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter

import asyncpg

from engine.pg.settings import parse_url
from engine.pg_log import PgSagaLog
from engine.saga_log import NewSaga

SAGAS = 10_000
# Long enough for the first pass over every saga to end before the first leases expire
# (claims take the oldest first: a shorter lease would have them re-claim the head for
# ever); then expired sagas are claimed again, both claimers racing for them too.
LEASE_MS = 6_000
RECLAIMS = 500


async def _seed(url: str) -> None:
    log = await PgSagaLog.open(parse_url(url, "URL"))
    try:
        for first in range(0, SAGAS, 1000):  # group commit folds each thousand into a few
            await asyncio.gather(
                *(
                    log.create(
                        NewSaga(f"s{i:05d}", "order", b"{}"),
                        owner=None,
                        lease_expires_ms=0,
                        now_ms=1,
                    )
                    for i in range(first, first + 1000)
                )
            )
    finally:
        await log.close()


async def _claims_in_log(url: str) -> list[tuple[str, int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT s.id, t.attempt, t.error FROM saga_log.transitions t "
            "JOIN saga_log.sagas s ON s.seq = t.saga_seq WHERE t.phase = 'claimed'"
        )
    finally:
        await conn.close()
    return [(r["id"], int(r["attempt"]), r["error"]) for r in rows]


def test_two_processes_never_claim_one_saga_at_one_epoch(pg_url: str) -> None:
    began = time.monotonic()
    asyncio.run(_seed(pg_url))
    print(f"seeded {SAGAS} sagas in {time.monotonic() - began:.1f}s")
    start_at = time.time() + 3.0
    owners = ("claimer-a", "claimer-b")
    args = (str(start_at), str(LEASE_MS), str(RECLAIMS))
    procs = {
        owner: subprocess.Popen(
            [sys.executable, "-m", "tests.pg.claim_driver", pg_url, owner, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for owner in owners
    }
    handed: dict[str, list[tuple[str, int]]] = {}
    for owner, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        handed[owner] = [(sid, int(epoch)) for sid, epoch in map(json.loads, out.splitlines())]

    claims = Counter(claim for got in handed.values() for claim in got)
    twice = [claim for claim, n in claims.items() if n > 1]
    assert not twice, f"claimed by both at one epoch: {twice[:5]}"
    assert {sid for sid, _ in claims} == {f"s{i:05d}" for i in range(SAGAS)}
    assert all(handed.values()), "both claimers took part"
    assert len(claims) >= SAGAS + RECLAIMS, "expired leases were claimed again"

    # The log agrees: one CLAIMED transition per hand-over, naming who was handed it.
    logged = asyncio.run(_claims_in_log(pg_url))
    expected = {(sid, epoch, f"by {owner}") for owner, got in handed.items() for sid, epoch in got}
    assert Counter(logged) == Counter(expected)
    assert len(logged) == len(expected)
