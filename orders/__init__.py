"""The order domain, on top of the generic engine: the order saga's definition, the gRPC
clients of its three participants, the order model, and the audit of the contract's
invariants. The gateway, the recovery daemon and the CLI import it; it imports none of
them.

- `orders.model`: what a client orders and sees (integer cents), derived from the saga;
- `orders.saga`: the saga (create order, reserve stock, charge payment, confirm);
- `orders.participants`: the participants' gRPC clients, the epoch on every call;
- `orders.audit`, `orders.audit_io`: the invariants (pure) and the snapshot they judge.
"""

from orders.model import ORDER_SAGA, Item, Order, OrderRequest, OrderStatus
from orders.participants import Participants, ServiceAddresses
from orders.saga import OrderSagaPolicy, order_saga, order_saga_shape

__all__ = [
    "ORDER_SAGA",
    "Item",
    "Order",
    "OrderRequest",
    "OrderSagaPolicy",
    "OrderStatus",
    "Participants",
    "ServiceAddresses",
    "order_saga",
    "order_saga_shape",
]
