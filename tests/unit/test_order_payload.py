"""An order's payload: canonical JSON both ways, decoded once however often it is read."""

from __future__ import annotations

import json

import pytest

from orders.model import Item, OrderRequest

ORDER = OrderRequest("c1", (Item("prod_1", 2, 1000), Item("prod_2", 1, 250)))


def test_the_payload_round_trips() -> None:
    assert OrderRequest.from_payload(ORDER.to_payload()) == ORDER
    assert ORDER.total_cents == 2250


def test_each_read_of_a_saga_s_payload_after_the_first_is_not_parsed_again() -> None:
    payload = ORDER.to_payload()
    first = OrderRequest.from_payload(payload)
    assert OrderRequest.from_payload(payload) is first
    alike = bytes(bytearray(payload))  # another saga, the same order: the same value
    assert alike is not payload and OrderRequest.from_payload(alike) == first


@pytest.mark.parametrize("payload", [b"{", b"{}", json.dumps({"customer_id": "c"}).encode()])
def test_an_unreadable_payload_fails_every_time(payload: bytes) -> None:
    for _ in range(2):
        with pytest.raises((ValueError, KeyError)):
            OrderRequest.from_payload(payload)
