"""Helpers of the services' tests: a migrated ledger connection, write units, and a real
grpc.aio server of one service on a free port with a real channel to it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar, cast

import apsw
import asyncpg
import grpc
import grpc.aio

from engine.sqlite import DbConfig, migrate, open_connection, transaction
from services.common.server import RunningService, start
from services.main import spec_for
from services.settings import ServiceName, ServiceSettings

T = TypeVar("T")

SEED = (("prod_1", 15), ("prod_2", 10), ("prod_3", 0))
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def ledger_conn(path: Path, migrations: Sequence[str]) -> apsw.Connection:
    conn = open_connection(DbConfig(path))
    migrate(conn, migrations)
    return conn


def unit(conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """Run `fn` as the Writer would run one unit: all of it commits, or none of it."""
    with transaction(conn):
        return fn(conn)


def settings_for(name: str, data_dir: Path, **overrides: object) -> ServiceSettings:
    settings = ServiceSettings(
        name=ServiceName(name),
        addr=("127.0.0.1", 0),  # the OS picks a free port
        ledger_path=data_dir / f"{name}.db",
        grace_s=1.0,
        seed_stock=SEED if name == "inventory" else (),
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


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database on the shared PostgreSQL server, dropped afterwards."""
    name = f"svc_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()
