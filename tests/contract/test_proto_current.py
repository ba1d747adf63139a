"""The committed generated code is exactly what the generator makes from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name.endswith(GENERATED)}
    committed = {
        p.relative_to(ROOT) for p in (ROOT / "proto").rglob("*") if p.name.endswith(GENERATED)
    }
    assert fresh == committed, "generated files added or removed: run scripts/gen_proto.py"
    stale = [
        str(p) for p in sorted(fresh) if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()
    ]
    assert not stale, f"stale generated code, run scripts/gen_proto.py: {stale}"


def test_contract_names_are_stable() -> None:
    from proto.inventory.v1 import inventory_pb2
    from proto.order.v1 import order_pb2
    from proto.payment.v1 import payment_pb2

    services = {
        "inventory.v1.Inventory": (
            {"Reserve", "Release", "GetStock", "GetReservation"},
            inventory_pb2,
        ),
        "payment.v1.Payment": ({"Charge", "Refund", "GetPayment"}, payment_pb2),
        "order.v1.Order": ({"CreateOrder", "GetOrder", "UpdateOrderStatus"}, order_pb2),
    }
    for full_name, (methods, module) in services.items():
        service = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]
        assert service.full_name == full_name
        assert methods <= {m.name for m in service.methods}
    charge = payment_pb2.ChargeRequest.DESCRIPTOR.fields_by_name["amount_cents"]
    assert charge.type == charge.TYPE_INT64, "money is int64 cents, never a float"


def test_proto_is_this_projects_package() -> None:
    """`proto` is our top-level package; proto-plus (which installs a package of the same
    name) must stay out of the dependency tree or it would shadow it."""
    import importlib.metadata

    import proto

    assert Path(proto.__file__).resolve().parent == ROOT / "proto"
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert "proto-plus" not in installed
