"""`*_DATABASE_URL` settings: a PostgreSQL URL read once at the entry point (STYLE 8).

The URL is checked here, not at the first connection, so that a typo is one clear line at
start-up (`saga: error: …`, exit 2) instead of a failure deep in a request. No message
built here shows the password: `PgConfig.redacted` is the URL to print.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from engine.config import SettingsError

__all__ = ["PgConfig", "database_url", "parse_url"]

_SCHEMES: Final = ("postgresql", "postgres")
_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Query parameters libpq and asyncpg both understand; anything else is more likely a typo
# than a wish (asyncpg would send an unknown one to the server as a setting, which then
# fails every connection with a less clear message).
_PARAMS: Final = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
        "options",
        "host",
        "port",
        "user",
        "dbname",
        "password",
        "passfile",
    }
)
_SESSION_ATTRS: Final = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


@dataclass(frozen=True, slots=True)
class PgConfig:
    """A checked PostgreSQL URL. `dsn` carries the password and never appears in a repr;
    `redacted` is the same URL with the password replaced, for messages and logs."""

    dsn: str = field(repr=False)
    redacted: str
    database: str

    def __repr__(self) -> str:
        return f"PgConfig({self.redacted!r})"

    def __str__(self) -> str:
        return self.redacted


def database_url(env: Mapping[str, str], name: str) -> PgConfig | None:
    """The URL in `env[name]`; None when unset or empty. SettingsError names `name`."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return parse_url(raw.strip(), name)


def parse_url(raw: str, name: str) -> PgConfig:
    redacted = _redact(raw)

    def bad(why: str) -> SettingsError:
        return SettingsError(f"{name}={redacted}: {why}")

    try:
        url = urllib.parse.urlsplit(raw)
        port = url.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise bad(f"not a valid URL ({_scrub(str(exc), raw)})") from None
    if url.scheme.lower() not in _SCHEMES:
        raise bad("expected a URL starting postgresql:// or postgres://")
    if url.fragment:
        raise bad("a database URL has no #fragment")
    try:
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise bad("its ?query is malformed") from None
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        raise bad(f"unknown parameter {unknown[0]!r} (known: sslmode, application_name, …)")
    for key, values in query.items():
        if len(values) > 1:
            raise bad(f"parameter {key!r} is given twice")
    sslmode = query.get("sslmode", [""])[0]
    if "sslmode" in query and sslmode not in _SSLMODES:
        raise bad(f"sslmode={sslmode!r}: expected one of {', '.join(_SSLMODES)}")
    attrs = query.get("target_session_attrs", [""])[0]
    if "target_session_attrs" in query and attrs not in _SESSION_ATTRS:
        raise bad(f"target_session_attrs={attrs!r}: expected one of {', '.join(_SESSION_ATTRS)}")
    if "connect_timeout" in query and not query["connect_timeout"][0].isdigit():
        raise bad("connect_timeout: expected a whole number of seconds")
    if not (url.hostname or "host" in query):
        raise bad("no host: expected postgresql://USER@HOST:PORT/DATABASE")
    if port == 0:
        raise bad("port must be between 1 and 65535")
    database = urllib.parse.unquote(url.path.removeprefix("/")) or query.get("dbname", [""])[0]
    if "/" in database:
        raise bad(f"database name {database!r} contains '/'")
    return PgConfig(dsn=raw, redacted=redacted, database=database)


def _redact(raw: str) -> str:
    """`raw` with the password (in the user part or as ?password=) replaced by `***`."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return "<not a URL>"
    netloc, slash, tail = rest.partition("/")
    if not slash:
        netloc, q, tail = rest.partition("?")
        slash = "?" if q else ""
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    head = f"{scheme}://{userinfo}{at}{hostport}"
    if "password=" in tail:
        path, qmark, query = tail.partition("?")
        pairs = ["password=***" if p.startswith("password=") else p for p in query.split("&")]
        tail = path + qmark + "&".join(pairs) if qmark else "&".join(pairs)
    return f"{head}{slash}{tail}"


def _scrub(message: str, raw: str) -> str:
    """A parser's message with any piece of the URL's user part taken out."""
    netloc = raw.partition("://")[2].partition("/")[0]
    userinfo = netloc.rpartition("@")[0]
    secret = userinfo.partition(":")[2]
    return message.replace(secret, "***") if secret else message
