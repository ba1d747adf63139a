"""How fast the saga explorer's pages answer over a big saga log.

    python -m bench.explorer --sagas 1000000 --data /tmp/explorer-bench

Fills a saga log with N sagas (spread over the last 30 days, a few of them still running
or parked, each an order of one of 50,000 customers; a real history for the few sagas
whose page is timed), serves the real gateway app on it over HTTP, and times each page and
each live refresh: median and worst of a few dozen requests. The log is made once and kept
in --data (made again with --fresh). docs/explorer.md shows the numbers. Nothing shipped
imports this module; its own time is not what is measured.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
import httpx
import uvicorn

from engine.core import Phase, SagaStatus
from engine.log_settings import SagaLogSettings
from engine.saga_log import payload_digest
from engine.sqlite import DbConfig, Synchronous, open_connection
from engine.sqlite_log import SqliteSagaLog
from gateway.app import create_app
from gateway.settings import GatewaySettings
from orders.model import Item, OrderRequest
from orders.participants import Participants, ServiceAddresses
from orders.runtime import DriveSettings

__all__ = ["Timing", "fill", "main", "measure", "pages_for"]

DAY_MS: Final = 86_400_000
CUSTOMERS: Final = 50_000
BATCH: Final = 20_000
# Of every 1,000 sagas: still running, parked, compensated; the rest completed.
RUNNING, PARKED, COMPENSATED = 2, 1, 80
HISTORY: Final = (
    ("", Phase.CREATED, 1, None),
    ("create_order", Phase.INTENT, 1, None),
    ("create_order", Phase.DONE, 1, None),
    ("reserve_stock", Phase.INTENT, 1, None),
    ("", Phase.CLAIMED, 2, "by recovery@bench"),
    ("reserve_stock", Phase.INTENT, 2, None),
    ("reserve_stock", Phase.DONE, 2, None),
    ("charge_payment", Phase.INTENT, 1, None),
    ("charge_payment", Phase.ERROR, 1, "UNAVAILABLE"),
    ("charge_payment", Phase.INTENT, 2, None),
    ("charge_payment", Phase.DONE, 2, None),
    ("confirm_order", Phase.INTENT, 1, None),
    ("confirm_order", Phase.DONE, 1, None),
    ("", Phase.COMPLETED, 0, None),
)


REASONS: Final = {
    SagaStatus.COMPENSATED: "payment_declined",
    SagaStatus.NEEDS_ATTENTION: "charge_payment: 40 attempts failed (last: UNAVAILABLE)",
}


def _status(i: int) -> SagaStatus:
    k = i % 1000
    if k < RUNNING:
        return SagaStatus.RUNNING
    if k < RUNNING + PARKED:
        return SagaStatus.NEEDS_ATTENTION
    if k < RUNNING + PARKED + COMPENSATED:
        return SagaStatus.COMPENSATED
    return SagaStatus.COMPLETED


def fill(path: Path, sagas: int, now_ms: int) -> None:
    """N sagas in creation order, oldest 30 days ago, through the adapter's own schema
    (its triggers keep the counts as they would in production)."""
    cfg = DbConfig(path, Synchronous.NORMAL)
    log = SqliteSagaLog.open(cfg)
    log.close_sync()
    conn = open_connection(cfg)
    conn.pragma("synchronous", 0)
    rng = random.Random(7)
    start = now_ms - 30 * DAY_MS
    step = 30 * DAY_MS / max(sagas, 1)
    for first in range(0, sagas, BATCH):
        rows, trans = [], []
        for i in range(first, min(first + BATCH, sagas)):
            created = int(start + i * step)
            status = _status(i)
            cust = f"cust_{rng.randrange(CUSTOMERS):05d}"
            payload = OrderRequest(cust, (Item("prod_1", 1 + i % 3, 1999),)).to_payload()
            updated = created + (180 if status.finished else 0)
            key = f"key-{i:07d}"
            digest = payload_digest(payload)
            row = (i + 1, f"bench-{i:07d}", status.value, payload, digest, key, REASONS.get(status))
            rows.append((*row, created, updated))
            trans.append((i + 1, created))
        with conn:
            conn.executemany(
                "INSERT INTO sagas (seq, id, definition, status, payload, payload_digest, "
                "idempotency_key, reason, created_ms, updated_ms, last_n) "
                "VALUES (?, ?, 'order', ?, ?, ?, ?, ?, ?, ?, 1)",
                rows,
            )
            conn.executemany(
                "INSERT INTO transitions (saga_seq, n, step, phase, attempt, at_ms) "
                "VALUES (?, 1, '', 'created', 1, ?)",
                trans,
            )
    # One saga with a whole story (a recovery, a retry, the pivot) for the saga page.
    seq = sagas
    with conn:
        conn.execute("DELETE FROM transitions WHERE saga_seq = ?", (seq,))
        created = int(start + (sagas - 1) * step)
        conn.executemany(
            "INSERT INTO transitions (saga_seq, n, step, phase, attempt, error, at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (seq, n, s, p.value, a, e, created + 40 * n)
                for n, (s, p, a, e) in enumerate(HISTORY, start=1)
            ],
        )
        conn.execute("UPDATE sagas SET last_n = ? WHERE seq = ?", (len(HISTORY), seq))
    conn.close()


@dataclass(frozen=True, slots=True)
class Timing:
    page: str
    median_ms: float
    worst_ms: float
    status: int


async def measure(path: Path, pages: list[tuple[str, str, bool]], repeat: int) -> list[Timing]:
    # No participant services: port 1 refuses at once, so the overview's readiness checks
    # answer "not ready" without waiting (and never reach a service someone else runs).
    nowhere = ("127.0.0.1", 1)
    settings = GatewaySettings(
        drive=DriveSettings(
            log=SagaLogSettings(DbConfig(path, Synchronous.NORMAL)),
            services=ServiceAddresses(nowhere, nowhere, nowhere),
        ),
        admin_token="bench",
    )
    log = SqliteSagaLog.open(settings.drive.log.db)
    participants = Participants(settings.drive.services)  # nothing listens: "not ready"
    app = create_app(settings, log=log, participants=participants, owner="bench-gateway")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    out: list[Timing] = []
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for name, path_q, live in pages:
                headers = {"X-Fragment": "live"} if live else {}
                took: list[float] = []
                status = 0
                for _ in range(repeat + 2):
                    started = time.perf_counter()
                    resp = await http.get(path_q, headers=headers)
                    took.append((time.perf_counter() - started) * 1000)
                    status = resp.status_code
                took = took[2:]  # the first two warm the caches
                out.append(Timing(name, statistics.median(took), max(took), status))
    finally:
        server.should_exit = True
        await task
        await participants.close()
        await log.close()
    return out


def pages_for(sagas: int) -> list[tuple[str, str, bool]]:
    newest = f"bench-{sagas - 1:07d}"
    middle = f"s{sagas // 2}"
    return [
        ("overview", "/ui", False),
        ("overview, live refresh", "/ui", True),
        ("list, newest 50", "/ui/sagas", False),
        ("list, live refresh", "/ui/sagas", True),
        ("list, a page in the middle", f"/ui/sagas?cursor={middle}", False),
        ("list, NEEDS_ATTENTION", "/ui/sagas?status=NEEDS_ATTENTION", False),
        ("list, RUNNING + COMPENSATING", "/ui/sagas?status=RUNNING&status=COMPENSATING", False),
        ("list, newer than 1h", "/ui/sagas?newer_than=1h", False),
        ("list, newer than 1m (few match)", "/ui/sagas?newer_than=1m", False),
        ("list, older than 7d", "/ui/sagas?older_than=7d", False),
        ("list, older than 29d (few match)", "/ui/sagas?older_than=29d23h", False),
        ("list, COMPENSATED older than 1d", "/ui/sagas?status=COMPENSATED&older_than=1d", False),
        ("search, a customer id", "/ui/sagas?q=cust_04242", False),
        ("search, an idempotency key", f"/ui/sagas?q=key-{sagas // 3:07d}", False),
        ("search, a saga id", f"/ui/sagas?q={newest}", False),
        ("search, nothing matches", "/ui/sagas?q=nobody", False),
        ("one saga", f"/ui/sagas/{newest}", False),
        ("one saga, live refresh", f"/ui/sagas/{newest}", True),
        ("unknown saga (404)", "/ui/sagas/nope", False),
        ("bad filter (400)", "/ui/sagas?status=NOPE", False),
    ]


@click.command()
@click.option("--sagas", default=1_000_000, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=Path("var/bench-explorer"))
@click.option("--repeat", default=20, show_default=True)
@click.option("--fresh", is_flag=True, help="make the log again even if it exists")
def main(sagas: int, data: Path, repeat: int, fresh: bool) -> None:
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"saga-{sagas}.db"
    if fresh or not path.exists():
        for stale in data.glob(f"saga-{sagas}.db*"):
            stale.unlink()
        started = time.perf_counter()
        fill(path, sagas, time.time_ns() // 1_000_000)
        click.echo(f"filled {sagas:,} sagas in {time.perf_counter() - started:.0f}s: {path}")
    timings = asyncio.run(measure(path, pages_for(sagas), repeat))
    click.echo(f"| page ({sagas:,} sagas) | median | worst of {repeat} | status |")
    click.echo("|---|---:|---:|---:|")
    for t in timings:
        click.echo(f"| {t.page} | {t.median_ms:.1f} ms | {t.worst_ms:.1f} ms | {t.status} |")


if __name__ == "__main__":
    main()
