"""A gateway on a PostgreSQL saga log whose server dies (a server of the test's own): a
POST then answers 503 `unavailable` (nothing was created), never a 500; once the server is
back, the same gateway, never restarted, takes the same request and drives it to its end."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.pg_server import PgServer
from tests.support.stack import Stack, wait_terminal

BODY = {"customer_id": "c1", "items": [{"product_id": "prod_1", "quantity": 1, "price": 5.0}]}


def test_a_post_while_the_database_is_down_is_503_then_works(tmp_path: Path) -> None:
    with PgServer.create(tmp_path) as pg:
        stack = Stack.create(tmp_path, SAGA_DATABASE_URL=pg.url(), SAGA_LEASE_S="2")
        try:
            stack.start_services()
            stack.start_gateway()
            with httpx.Client(base_url=stack.url, timeout=30) as client:
                first = client.post("/orders", json=BODY, headers={"Idempotency-Key": "a"})
                assert first.status_code == 201, first.text

                pg.kill()
                down = client.post("/orders", json=BODY, headers={"Idempotency-Key": "b"})
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "unavailable"
                assert "postgres" not in down.text.lower()  # no driver detail for clients

                pg.start()
                again = client.post("/orders", json=BODY, headers={"Idempotency-Key": "b"})
                assert again.status_code == 201, again.text
                assert "Idempotent-Replayed" not in again.headers, "the 503 created nothing"
                for order in (first.json()["id"], again.json()["id"]):
                    assert wait_terminal(client, order, within_s=60)["status"] == "CONFIRMED"
            assert stack.gateway is not None and stack.gateway.running
            report = stack.audit(wait_s=30)
            assert report.ok, report
            assert report.orders == 2
        finally:
            stack.close()
