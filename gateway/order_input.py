"""POST /orders input: raw bytes and headers -> an `OrderRequest` in integer cents, or a
400 that names the field.

Parsed by hand rather than by a pydantic body model, for two reasons the contract makes:
money must be exact (`json.loads(..., parse_float=Decimal)`: 0.1 + 0.2 never happens,
19.99 is 1999 cents, and 50.001 is refused instead of rounded), and a malformed body is a
400 with one of three codes (`invalid_json`, `invalid_request`, `invalid_item`), where
FastAPI would answer 422 with its own shape. The pydantic models in gateway/schemas.py
describe the same body for OpenAPI.

The rules: a type mistake is `invalid_request` (the request's shape is wrong); a value
an item cannot have is `invalid_item`. Identifiers follow the participant services' rules
(non-blank, at most 128 printable characters) so that nothing accepted here is refused
there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Final

from gateway.errors import ApiError
from orders.model import Item, OrderRequest

__all__ = [
    "MAX_CENTS",
    "MAX_ID_LEN",
    "MAX_ITEMS",
    "MAX_KEY_LEN",
    "MAX_QUANTITY",
    "idempotency_key",
    "is_json_media_type",
    "parse_order",
]

MAX_ID_LEN: Final = 128
MAX_KEY_LEN: Final = 255
MAX_ITEMS: Final = 1000
MAX_QUANTITY: Final = 1_000_000
MAX_CENTS: Final = 2**63 - 1  # int64: the services' and the protos' money type
_MAX_PRICE: Final = Decimal(MAX_CENTS).scaleb(-2)
_CENT: Final = Decimal("0.01")


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _bad_item(message: str) -> ApiError:
    return ApiError(400, "invalid_item", message)


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (`; charset=utf-8`)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _parse_int(text: str) -> int:
    # Python refuses int(str) past 4300 digits (a DoS guard) and json.loads would fail
    # with a ValueError; the value is out of range anyway, so keep it as a big int.
    return int(text) if len(text) <= 4000 else int(Decimal(text))


def _decode(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_parse_int, parse_constant=Decimal)
    except (ValueError, RecursionError) as exc:
        detail = (
            f" ({exc.msg} at position {exc.pos})" if isinstance(exc, json.JSONDecodeError) else ""
        )
        raise ApiError(400, "invalid_json", f"the body is not valid JSON{detail}") from None


def _identifier(value: object, where: str, *, item: bool) -> str:
    if not isinstance(value, str):
        raise _bad_request(f"{where} must be a string")
    bad = _bad_item if item else _bad_request
    if not value.strip():
        raise bad(f"{where} must not be empty")
    if len(value) > MAX_ID_LEN:
        raise bad(f"{where} is {len(value)} characters long; at most {MAX_ID_LEN}")
    if not value.isprintable():
        raise bad(f"{where} must not contain control or unprintable characters")
    return value


def _quantity(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _bad_request(f"{where} must be a whole number")
    if isinstance(value, Decimal):  # 1.5, 1.0, 1e3, NaN: JSON that is not an integer
        raise _bad_item(f"{where} must be a whole number, without a decimal point or exponent")
    if not 1 <= value <= MAX_QUANTITY:
        raise _bad_item(f"{where} must be from 1 to {MAX_QUANTITY}")
    return value


def _cents(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _bad_request(f"{where} must be a number")
    price = Decimal(value) if isinstance(value, int) else value
    if not price.is_finite():
        raise _bad_item(f"{where} must be a finite number")
    if price <= 0:
        raise _bad_item(f"{where} must be greater than 0")
    if price > _MAX_PRICE:
        raise _bad_item(f"{where} is too large")
    # Bounded above, so 2 decimals fit the context's 28 digits and quantize is exact when
    # the price has no more than 2 decimals; any other digit makes them differ.
    try:
        cents = price.quantize(_CENT)
    except InvalidOperation:
        cents = Decimal("NaN")
    if cents != price:
        raise _bad_item(f"{where} has more than 2 decimals; prices are in whole cents")
    return int(cents.scaleb(2))


def parse_order(body: bytes) -> OrderRequest:
    """The order in `body`, or an ApiError 400 naming the first thing wrong with it."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise _bad_request("the body must be a JSON object with customer_id and items")
    if "customer_id" not in doc:
        raise _bad_request("customer_id is required")
    customer_id = _identifier(doc["customer_id"], "customer_id", item=False)
    raw_items = doc.get("items")
    if raw_items is None:
        raise _bad_request("items is required")
    if not isinstance(raw_items, list):
        raise _bad_request("items must be an array")
    if not raw_items:
        raise _bad_request("items must not be empty")
    if len(raw_items) > MAX_ITEMS:
        raise _bad_request(f"items has {len(raw_items)} entries; at most {MAX_ITEMS}")
    items: list[Item] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_items):
        where = f"items[{i}]"
        if not isinstance(raw, dict):
            raise _bad_request(f"{where} must be an object with product_id, quantity, price")
        for name in ("product_id", "quantity", "price"):
            if name not in raw:
                raise _bad_request(f"{where}.{name} is required")
        product_id = _identifier(raw["product_id"], f"{where}.product_id", item=True)
        if product_id in seen:
            # The inventory reserves per product: one line per product, as the services say.
            raise _bad_item(f"{where}.product_id {product_id!r} appears twice; one line each")
        seen.add(product_id)
        quantity = _quantity(raw["quantity"], f"{where}.quantity")
        cents = _cents(raw["price"], f"{where}.price")
        items.append(Item(product_id, quantity, cents))
    order = OrderRequest(customer_id, tuple(items))
    if order.total_cents > MAX_CENTS:
        raise _bad_request("the order's total is too large (it must fit in 64-bit cents)")
    return order


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """`X-Idempotency-Key` (the seed's name) or `Idempotency-Key` (the IETF draft's); both
    may be sent only if they agree."""
    values = {
        v
        for v in (headers.get("x-idempotency-key"), headers.get("idempotency-key"))
        if v is not None
    }
    if not values:
        return None
    if len(values) > 1:
        raise _bad_request("X-Idempotency-Key and Idempotency-Key differ; send one of them")
    key = values.pop()
    if not key.strip():
        raise _bad_request("the idempotency key must not be empty")
    if len(key) > MAX_KEY_LEN:
        raise _bad_request(f"the idempotency key is longer than {MAX_KEY_LEN} characters")
    if not (key.isascii() and key.isprintable()):
        raise _bad_request("the idempotency key must be printable ASCII")
    return key
