"""A PostgreSQL ledger's COMMIT cut off on the wire: the server committed, the reply never
came. The call is answered CommitOutcomeUnknown (UNKNOWN at the edge), never as if nothing
happened; the store goes on (no restart, unlike SQLite's poisoned writer); the caller's
retry of the same call is answered from the journal and applied once.

The cut is real: the ledger talks to the shared server through tests/support/faultproxy.py,
switched to RESET after the call's last statement, so the COMMIT reaches the server and
its answer aborts the connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import CommitOutcomeUnknown
from engine.pg.pool import Conn
from services.common.backend import PgBacked
from services.common.journal import Answer
from services.inventory import backends as inventory
from services.payment import backends as payment
from services.payment.ledger import PaymentState
from tests.services.helpers import settings_for
from tests.support.faultproxy import FaultProxy, Mode

SHARED_PORT = 5432


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(SHARED_PORT, name="pg-proxy") as running:
        yield running


def cut_every_commit(ledger: PgBacked, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, each write's COMMIT goes through and its answer is cut off."""
    write = ledger.store.write

    async def cut(unit: Callable[[Conn], Awaitable[Any]]) -> Any:
        async def then_cut(conn: Conn) -> Any:
            result = await unit(conn)
            proxy.set(Mode.RESET)  # the next reply from the server aborts the connection
            return result

        return await write(then_cut)

    monkeypatch.setattr(ledger.store, "write", cut)


async def test_a_charge_whose_commit_answer_is_lost_is_unknown_then_applied_once(
    pg_url: str, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url.replace(f":{SHARED_PORT}/", f":{proxy.port}/")
    ledger = await payment.open_ledger(settings_for("payment", tmp_path, database_url=url))
    try:
        await ledger.ready()
        assert isinstance(ledger, PgBacked)
        with monkeypatch.context() as patch:
            cut_every_commit(ledger, proxy, patch)
            with pytest.raises(CommitOutcomeUnknown):
                await ledger.charge("o1", 1, 700, "cust")
        proxy.heal()
        assert proxy.stats["resets"] >= 1
        # It was durable before any repeat: the COMMIT reached the server.
        durable = await ledger.payment("o1")
        assert (durable.state, durable.amount_cents) == (PaymentState.CHARGED, 700)
        # The repeat is answered from the journal, nothing charged twice.
        assert await ledger.charge("o1", 1, 700, "cust") == Answer(True)
        found = await ledger.payment("o1")
        assert (found.state, found.amount_cents) == (PaymentState.CHARGED, 700)
        journal = await ledger.store.read(
            lambda c: c.fetchval("SELECT count(*) FROM payment_svc.journal")
        )
        assert journal == 1
    finally:
        await ledger.close()


async def test_a_reserve_whose_commit_answer_is_lost_takes_its_stock_once(
    pg_url: str, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url.replace(f":{SHARED_PORT}/", f":{proxy.port}/")
    ledger = await inventory.open_ledger(settings_for("inventory", tmp_path, database_url=url))
    try:
        await ledger.ready()
        assert isinstance(ledger, PgBacked)
        with monkeypatch.context() as patch:
            cut_every_commit(ledger, proxy, patch)
            with pytest.raises(CommitOutcomeUnknown):
                await ledger.reserve("o1", 1, [("prod_1", 4)])
        proxy.heal()
        durable = await ledger.stock(["prod_1"])  # before any repeat: the COMMIT landed
        assert (durable.available, durable.reserved) == ({"prod_1": 11}, {"prod_1": 4})
        assert await ledger.reserve("o1", 1, [("prod_1", 4)]) == Answer(True)
        view = await ledger.stock(["prod_1"])
        assert (view.available, view.reserved) == ({"prod_1": 11}, {"prod_1": 4})
    finally:
        await ledger.close()
