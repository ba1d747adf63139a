"""Input validation at the edge: a malformed request is INVALID_ARGUMENT with a message that
names the field, never an INTERNAL error from deep inside a ledger.

Pure functions: each returns the checked value or raises `InvalidArgument`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from services.common.errors import InvalidArgument

__all__ = [
    "MAX_CENTS",
    "MAX_ID_LEN",
    "MAX_ITEMS",
    "MAX_QUANTITY",
    "MAX_REASON_LEN",
    "ItemLike",
    "identifier",
    "items",
    "positive_cents",
    "quantity",
    "reason",
]

MAX_ID_LEN: Final = 128
MAX_QUANTITY: Final = 1_000_000
MAX_ITEMS: Final = 1000
MAX_REASON_LEN: Final = 1024
MAX_CENTS: Final = 2**63 - 1


class ItemLike(Protocol):
    """A proto item line: inventory's StockItem and order's OrderItem both fit."""

    @property
    def product_id(self) -> str: ...

    @property
    def quantity(self) -> int: ...


def identifier(field: str, value: str) -> str:
    if not value or not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(field, f"is {len(value)} characters long; at most {MAX_ID_LEN}")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def quantity(field: str, value: int) -> int:
    if not 1 <= value <= MAX_QUANTITY:
        raise InvalidArgument(field, f"is {value}; expected 1 to {MAX_QUANTITY}")
    return value


def positive_cents(field: str, value: int) -> int:
    if not 0 < value <= MAX_CENTS:
        raise InvalidArgument(field, f"is {value}; expected a positive number of cents")
    return value


def reason(field: str, value: str) -> str:
    if len(value) > MAX_REASON_LEN:
        raise InvalidArgument(field, f"is {len(value)} characters long; at most {MAX_REASON_LEN}")
    return value


def items(field: str, lines: Sequence[ItemLike]) -> list[tuple[str, int]]:
    """(product id, quantity) per line: 1 to MAX_ITEMS lines, each product at most once."""
    if not lines:
        raise InvalidArgument(field, "must name at least one item")
    if len(lines) > MAX_ITEMS:
        raise InvalidArgument(field, f"has {len(lines)} items; at most {MAX_ITEMS}")
    checked: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        product_id = identifier(f"{field}[{i}].product_id", line.product_id)
        if product_id in seen:
            raise InvalidArgument(
                f"{field}[{i}].product_id",
                f"{product_id!r} appears twice; send one line per product",
            )
        seen.add(product_id)
        checked.append((product_id, quantity(f"{field}[{i}].quantity", line.quantity)))
    return checked
