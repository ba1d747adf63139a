"""Each service exposes Prometheus metrics of its RPCs (by method and code, never ids)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from proto.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.support.procs import free_port, start_service

BAD = 'saga_service_rpc_total{code="INVALID_ARGUMENT",method="Reserve",service="inventory"} 1.0'
TIMED = 'saga_service_rpc_duration_seconds_count{method="Reserve",service="inventory"} 3.0'


def test_rpc_counts_and_latency_by_method_and_code(tmp_path: Path) -> None:
    with start_service("inventory", tmp_path / "data", free_port()) as svc:
        found = re.search(r"metrics on ([\d.]+:\d+)", svc.output())
        assert found, svc.output()
        with grpc.insecure_channel(svc.address) as channel:
            stub = inventory_pb2_grpc.InventoryStub(channel)
            item = inventory_pb2.StockItem(product_id="prod_1", quantity=1)
            stub.Reserve(inventory_pb2.ReserveRequest(order_id="o-1", items=[item]))
            stub.Reserve(inventory_pb2.ReserveRequest(order_id="o-1", items=[item]))
            with pytest.raises(grpc.RpcError):
                stub.Reserve(inventory_pb2.ReserveRequest(order_id="", items=[item]))
        # An aborted call's status reaches the client before the server has finished
        # counting it (grpc.aio sends it from `abort`): read until the count is there.
        deadline = time.monotonic() + 5
        while True:
            url = f"http://{found.group(1)}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            if (BAD in text and TIMED in text) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    ok = 'saga_service_rpc_total{code="OK",method="Reserve",service="inventory"} 2.0'
    assert ok in text
    assert BAD in text
    assert TIMED in text
    assert "o-1" not in text, "labels never carry ids"
