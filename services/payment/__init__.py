"""The payment service: `ledger` holds the rules, `servicer` is the gRPC edge."""

from services.payment import ledger
from services.payment.servicer import spec

__all__ = ["ledger", "spec"]
