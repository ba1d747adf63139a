"""A fresh database on the machine's PostgreSQL server for each test that reads and writes
(tests that kill, pause or partition a server start their own instead, never this one).

    with fresh_database() as url:   # postgresql://postgres@127.0.0.1:5432/t_<random>
        ...                         # dropped WITH (FORCE) afterwards

The `pg_url` fixture (tests/conftest.py) is the same as a fixture. A server that cannot be
reached fails the test with one line saying so: never a silent skip, so a machine without
PostgreSQL cannot pass the PostgreSQL suites by running none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Coroutine, Iterator
from typing import Final, TypeVar

import asyncpg
import pytest

__all__ = ["SHARED_HOST", "SHARED_PORT", "fresh_database", "server_url"]

T = TypeVar("T")

SHARED_HOST: Final = "127.0.0.1"
SHARED_PORT: Final = 5432
_USER: Final = "postgres"


def server_url(database: str, *, host: str = SHARED_HOST, port: int = SHARED_PORT) -> str:
    return f"postgresql://{_USER}@{host}:{port}/{database}"


def _run(coro: Coroutine[object, object, T]) -> T:
    """Run `coro` on a loop of its own, in a thread: works inside async tests too."""
    box: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            box.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name="pg-admin")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


async def _admin(sql: str, host: str, port: int) -> None:
    conn = await asyncpg.connect(server_url("postgres", host=host, port=port), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(*, host: str = SHARED_HOST, port: int = SHARED_PORT) -> Iterator[str]:
    """Create `t_<random>` on the server, yield its URL, drop it (forcing out any
    connection a test left open)."""
    name = f"t_{secrets.token_hex(6)}"
    try:
        _run(_admin(f'CREATE DATABASE "{name}"', host, port))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(
            f"PostgreSQL is not running at {host}:{port} (or refuses user {_USER}: "
            f"{type(exc).__name__}: {exc}); start it, e.g. `service postgresql start`",
            pytrace=False,
        )
    try:
        yield server_url(name, host=host, port=port)
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', host, port))
