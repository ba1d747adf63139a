"""A quick burst of mutating calls at each service, its ledger in SQLite and then in
PostgreSQL: the service process's CPU per call and the calls per second.

    python -m bench.ledgers --calls 2000 --admin-url postgresql://postgres@127.0.0.1:5432/postgres

Each run starts one `saga service NAME` on a fresh ledger (a new folder; a new database
made through `--admin-url`, dropped afterwards), warms it up, measures its idle CPU for a
few seconds (grpc's pollers and the health watcher spend some with nothing to do), then
sends `--calls` calls, `--in-flight` at a time, each for a new order: CreateOrder, Charge,
or a Reserve of one unit of one product (every Reserve contends for that product's row).
CPU per call is (CPU during the burst - idle CPU for as long) / calls. Numbers for
docs/scale-out.md (The services on PostgreSQL, Costs); a quiet machine gives steadier ones.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import asyncpg
import grpc.aio

from bench.measure import SERVICES
from proto.inventory.v1 import inventory_pb2 as inv
from proto.inventory.v1 import inventory_pb2_grpc as inv_grpc
from proto.order.v1 import order_pb2 as orders
from proto.order.v1 import order_pb2_grpc as order_grpc
from proto.payment.v1 import payment_pb2 as pay
from proto.payment.v1 import payment_pb2_grpc as pay_grpc
from saga.children import SERVICE_ADDR_VARS, Child, base_env
from saga.probes import free_port, grpc_serving

EPOCH: Final = (("x-saga-epoch", "1"),)
WARM_UP: Final = 200
IDLE_S: Final = 3.0

Call = Callable[[str], Awaitable[object]]


def caller(name: str, channel: grpc.aio.Channel) -> Call:
    """One mutating call of service `name` for a new order id."""
    if name == "order":
        order_stub = order_grpc.OrderStub(channel)
        item = orders.OrderItem(product_id="prod_1", quantity=1, unit_price_cents=100)
        return lambda order_id: order_stub.CreateOrder(
            orders.CreateOrderRequest(id=order_id, customer_id="c", items=[item]),
            metadata=EPOCH,
        )
    if name == "payment":
        pay_stub = pay_grpc.PaymentStub(channel)
        return lambda order_id: pay_stub.Charge(
            pay.ChargeRequest(order_id=order_id, amount_cents=100), metadata=EPOCH
        )
    inv_stub = inv_grpc.InventoryStub(channel)
    unit = inv.StockItem(product_id="prod_1", quantity=1)
    return lambda order_id: inv_stub.Reserve(
        inv.ReserveRequest(order_id=order_id, items=[unit]), metadata=EPOCH
    )


async def burst(name: str, env: dict[str, str], calls: int, in_flight: int) -> tuple[float, float]:
    """(CPU µs per call, calls per second) of one service process on a fresh ledger."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    address = f"127.0.0.1:{free_port()}"
    env = base_env(
        SAGA_DATA_DIR=str(root),
        SAGA_LOG_LEVEL="WARNING",
        INVENTORY_SEED_STOCK="prod_1=100000000",
        **{SERVICE_ADDR_VARS[name]: address},
        **env,
    )
    child = Child.saga(["service", name], env, log_path=root / f"{name}.log", cwd=root)
    try:
        child.wait_ready(lambda: grpc_serving(address), 60.0)
        async with grpc.aio.insecure_channel(address) as channel:
            send = caller(name, channel)
            for i in range(WARM_UP):
                await send(f"warm-{i}")
            cpu, at = child.cpu_seconds(), time.perf_counter()
            await asyncio.sleep(IDLE_S)
            idle_per_s = (child.cpu_seconds() - cpu) / (time.perf_counter() - at)
            gate = asyncio.Semaphore(in_flight)

            async def one(i: int) -> None:
                async with gate:
                    await send(f"order-{i}")

            cpu, at = child.cpu_seconds(), time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(calls)))
            spent, took = child.cpu_seconds() - cpu, time.perf_counter() - at
    finally:
        child.kill()
    return (spent - idle_per_s * took) / calls * 1e6, calls / took


async def fresh_database(admin_url: str) -> str:
    name = f"bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(admin_url: str, url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    print("| service | SQLite: CPU/call, calls/s | PostgreSQL: CPU/call, calls/s |")
    print("|---|---|---|")
    for name in args.services.split(","):
        lite = await burst(name, {}, args.calls, args.in_flight)
        url = await fresh_database(args.admin_url)
        try:
            pg = await burst(
                name, {f"{name.upper()}_DATABASE_URL": url}, args.calls, args.in_flight
            )
        finally:
            await drop_database(args.admin_url, url)
        print(
            f"| {name} | {lite[0] / 1000:.2f} ms, {lite[1]:.0f}/s"
            f" | {pg[0] / 1000:.2f} ms, {pg[1]:.0f}/s |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledgers", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--services", default=",".join(SERVICES))
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL allowed to CREATE DATABASE (a fresh one per run)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
