"""Helpers of the services' tests: a migrated ledger connection, write units, and a real
grpc.aio server of one service on a free port with a real channel to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar, cast

import apsw
import grpc
import grpc.aio

from engine.pg.settings import parse_url
from engine.sqlite import DbConfig, migrate, open_connection, transaction
from services.common.server import RunningService, start
from services.main import spec_for
from services.settings import ServiceName, ServiceSettings

T = TypeVar("T")

SEED = (("prod_1", 15), ("prod_2", 10), ("prod_3", 0))


def ledger_conn(path: Path, migrations: Sequence[str]) -> apsw.Connection:
    conn = open_connection(DbConfig(path))
    migrate(conn, migrations)
    return conn


def unit(conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """Run `fn` as the Writer would run one unit: all of it commits, or none of it."""
    with transaction(conn):
        return fn(conn)


def settings_for(
    name: str, data_dir: Path, *, database_url: str | None = None, **overrides: object
) -> ServiceSettings:
    """A service's settings for a test: a free port, its ledger in `data_dir`, or in the
    PostgreSQL database at `database_url`."""
    settings = ServiceSettings(
        name=ServiceName(name),
        addr=("127.0.0.1", 0),  # the OS picks a free port
        ledger_path=data_dir / f"{name}.db",
        grace_s=1.0,
        seed_stock=SEED if name == "inventory" else (),
        database=None if database_url is None else parse_url(database_url, "test database"),
    )
    return replace(settings, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(
    settings: ServiceSettings,
) -> AsyncIterator[tuple[RunningService, grpc.aio.Channel]]:
    """The service's real server (same bootstrap as `saga service`) and a channel to it."""
    running = await start(spec_for(settings), settings)
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            yield running, channel
    finally:
        await running.stop(0)


def epoch(value: int | str) -> tuple[tuple[str, str], ...]:
    return (("x-saga-epoch", str(value)),)


def saga_error(err: grpc.aio.AioRpcError) -> str | None:
    """The `x-saga-error` code a service sent with an error status."""
    # grpc's stubs disagree with grpc.aio here: at run time this iterates as (key, value).
    pairs = cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ())
    for key, value in pairs:
        if key == "x-saga-error":
            return value.decode() if isinstance(value, bytes) else value
    return None
