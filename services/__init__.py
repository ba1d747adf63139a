"""The three participant gRPC services (Order, Payment, Inventory), each with its own
durable ledger. `saga service NAME` runs one through `services.main.run_service`."""

from services.main import run_service
from services.settings import ServiceName, ServiceSettings

__all__ = ["ServiceName", "ServiceSettings", "run_service"]
