"""The inventory service: `ledger` holds the rules, `servicer` is the gRPC edge."""

from services.inventory import ledger
from services.inventory.servicer import spec

__all__ = ["ledger", "spec"]
