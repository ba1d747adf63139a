"""What an operator typed into the explorer, parsed once into typed values (or refused with
a sentence the page shows): the list's filters, its page, its search, and a saga id.

The query string is read by hand rather than through FastAPI's parameter validation, so
that bad input on any page is that page's own error (a 400 page with the form kept), never
the API's JSON envelope; and so that nothing a user typed reaches the log unchecked."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlencode

from engine.config import DURATION_HINT, duration_ms
from engine.core import SagaStatus
from engine.saga_log import SagaFilter, decode_cursor
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_TEXT",
    "ListQuery",
    "UiInputError",
    "check_saga_id",
    "parse_list_query",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
# Longest id, key or search a page accepts: the API's own ids and keys are far shorter,
# and a page that echoes a megabyte back is a page nobody wanted.
MAX_TEXT: Final = 256
# Longest age a filter accepts: a century, so that the arithmetic stays in SQLite's range.
MAX_AGE_MS: Final = 100 * 365 * 86_400_000
_KNOWN: Final = frozenset({"status", "definition", "newer_than", "older_than", "q", "cursor",
                           "limit"})  # fmt: skip


class UiInputError(GatewayError):
    """Input a page cannot use; `field` names the form field at fault."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _text(field: str, raw: str) -> str:
    if len(raw) > MAX_TEXT:
        raise UiInputError(field, f"{field}: longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise UiInputError(field, f"{field}: control characters are not allowed")
    return raw


def check_saga_id(raw: str) -> str:
    """A saga id from a URL: text of sane length without control characters."""
    if not raw.strip():
        raise UiInputError("id", "the saga id is empty")
    return _text("saga id", raw)


def _age(field: str, raw: str) -> int:
    ms = duration_ms(raw)
    if ms is None:
        raise UiInputError(field, f"{field} {raw!r}: {DURATION_HINT}")
    if ms > MAX_AGE_MS:
        raise UiInputError(field, f"{field} {raw!r}: at most 100 years")
    return ms


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list page's state: everything that is in its URL."""

    statuses: tuple[SagaStatus, ...] = ()
    definition: str | None = None
    newer_than: str | None = None  # as typed ("5m"), for the form and the links
    older_than: str | None = None
    q: str | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT

    @property
    def searching(self) -> bool:
        return self.q is not None

    @property
    def filtered(self) -> bool:
        return bool(self.statuses or self.definition or self.newer_than or self.older_than)

    def to_filter(self, now_ms: int) -> SagaFilter:
        after = None if self.newer_than is None else now_ms - _age("newer than", self.newer_than)
        before = None if self.older_than is None else now_ms - _age("older than", self.older_than)
        return SagaFilter(
            definition=self.definition,
            statuses=self.statuses,
            created_after_ms=after,
            created_before_ms=before,
        )

    def query_string(self, **changes: object) -> str:
        """This query (with `changes`) as a URL query string, for links and polling."""
        q = replace(self, **changes)  # type: ignore[arg-type]
        pairs: list[tuple[str, str]] = [("status", s.value) for s in q.statuses]
        for name in ("definition", "newer_than", "older_than", "q", "cursor"):
            value = getattr(q, name)
            if value is not None:
                pairs.append((name, value))
        if q.limit != DEFAULT_LIMIT:
            pairs.append(("limit", str(q.limit)))
        return urlencode(pairs)


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v.strip() for v in params.get(name, ()) if v.strip()]
    if len(values) > 1:
        raise UiInputError(name, f"{name}: given {len(values)} times, expected once")
    return values[0] if values else None


def parse_list_query(
    params: Mapping[str, Sequence[str]], definitions: Collection[str], now_ms: int
) -> ListQuery:
    """The list's query string, checked whole: every field is validated even when another
    one would make it unused, so a typo is reported rather than silently ignored."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise UiInputError(unknown[0], f"unknown parameter {unknown[0][:40]!r}")
    statuses: list[SagaStatus] = []
    for raw in params.get("status", ()):
        if not raw.strip():
            continue
        try:
            status = SagaStatus(raw.strip().upper())
        except ValueError:
            known = ", ".join(s.value for s in SagaStatus)
            raise UiInputError("status", f"status {raw[:40]!r}: unknown; one of {known}") from None
        if status not in statuses:
            statuses.append(status)
    definition = _one(params, "definition")
    if definition is not None and definition not in definitions:
        known = ", ".join(sorted(definitions))
        raise UiInputError("definition", f"definition {definition[:40]!r}: unknown; one of {known}")
    q = _one(params, "q")
    cursor = _one(params, "cursor")
    if cursor is not None:
        decode_cursor(_text("cursor", cursor))  # InvalidCursor: the page says so
    raw_limit = _one(params, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4
        if not digits or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise UiInputError(
                "limit", f"limit {raw_limit[:40]!r}: a whole number, 1 to {MAX_LIMIT}"
            )
        limit = int(raw_limit)
    query = ListQuery(
        statuses=tuple(statuses),
        definition=definition,
        newer_than=_one(params, "newer_than"),
        older_than=_one(params, "older_than"),
        q=None if q is None else _text("search", q),
        cursor=cursor,
        limit=limit,
    )
    flt = query.to_filter(now_ms)  # checks both ages
    after, before = flt.created_after_ms, flt.created_before_ms
    if after is not None and before is not None and after >= before:
        raise UiInputError(
            "newer_than",
            f"newer than {query.newer_than} and older than {query.older_than} select nothing: "
            "the newer-than age must be the larger one",
        )
    return query
