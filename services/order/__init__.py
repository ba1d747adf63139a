"""The order service: `ledger` holds the rules, `servicer` is the gRPC edge."""

from services.order import ledger
from services.order.servicer import spec

__all__ = ["ledger", "spec"]
