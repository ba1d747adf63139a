"""Pages of the audit queries (List*): ordered by order id, resumed after the last one.

The page token is opaque to callers; it encodes the last order id of the previous page, so
a page never skips or repeats a record that existed when the listing began.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from services.common.errors import InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_SIZE",
    "LedgerPage",
    "PageRequest",
    "page_request",
]

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
# A page stops early past this many (estimated) bytes: 1000 orders of 1000 items each
# would not fit in grpc's default 4 MiB message. Callers page on until the token is empty.
MAX_PAGE_BYTES: Final = 2_000_000
_PREFIX: Final = "v1."

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after: str  # "" = from the start


@dataclass(frozen=True, slots=True)
class LedgerPage(Generic[T]):
    records: tuple[T, ...]
    last_id: str | None  # None: this is the last page

    @property
    def next_token(self) -> str:
        if self.last_id is None:
            return ""
        raw = base64.urlsafe_b64encode(self.last_id.encode()).decode().rstrip("=")
        return _PREFIX + raw

    @classmethod
    def of(
        cls,
        records: Sequence[T],
        limit: int,
        key: Callable[[T], str],
        size: Callable[[T], int] | None = None,
    ) -> LedgerPage[T]:
        """`records` fetched with LIMIT limit+1: one extra means there is a next page.
        With `size` (a record's estimated bytes), the page also ends at MAX_PAGE_BYTES."""
        kept: list[T] = []
        total = 0
        for record in records[:limit]:
            total += size(record) if size is not None else 0
            if kept and total > MAX_PAGE_BYTES:
                break
            kept.append(record)
        if len(kept) < len(records):
            return cls(tuple(kept), key(kept[-1]))
        return cls(tuple(kept), None)


def page_request(page_size: int, page_token: str) -> PageRequest:
    """0 means the default size; above the maximum is clamped to it (as AIP-158 asks)."""
    if page_size < 0:
        raise InvalidArgument("page_size", f"is {page_size}; expected 0 to {MAX_PAGE_SIZE}")
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(limit, "")
    if not page_token.startswith(_PREFIX):
        raise InvalidArgument("page_token", "is not a token from a previous page")
    raw = page_token.removeprefix(_PREFIX)
    try:
        after = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token", "is not a token from a previous page") from None
    if not after:
        raise InvalidArgument("page_token", "is not a token from a previous page")
    return PageRequest(limit, after)
