"""A Payment service that does nothing: what a gRPC call costs a server in Python before
any work of its own (`bench floor` measures it beside the real payment service).

    python -m bench.noop_server --mode aio --addr 127.0.0.1:PORT
    python -m bench.noop_server --mode sync --addr 127.0.0.1:PORT --workers 8

`aio`: a grpc.aio server on uvloop, as the services run (engine/event_loop.py).
`sync`: grpc's synchronous server, each call on a thread of a pool of `--workers`.
Both answer Charge with the same fixed reply at once, and serve grpc's health check
(SERVING from the start) so that the benchmark waits for them as for a real service. No
interceptor, no ledger, no validation: every microsecond left is gRPC's and Python's.
It lives in the benchmarks, never in the product: nothing shipped needs a no-op service.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from engine import event_loop
from proto.payment.v1 import payment_pb2 as pb
from proto.payment.v1 import payment_pb2_grpc as pb_grpc

__all__ = ["main"]

# The real servicer's answer to an accepted charge (services/payment/servicer.py).
REPLY: Final = pb.ChargeResponse(success=True, reason="")
# As the services: without it a second server on the same port would share the traffic.
OPTIONS: Final = [("grpc.so_reuseport", 0)]


# Charge only: the other methods keep the generated base class's UNIMPLEMENTED, which its
# type stubs declare abstract (hence the ignores where they are instantiated).
class NoopAio(pb_grpc.PaymentServicer):
    async def Charge(
        self,
        request: pb.ChargeRequest,
        context: grpc.aio.ServicerContext[pb.ChargeRequest, pb.ChargeResponse],
    ) -> pb.ChargeResponse:
        return REPLY


class NoopSync(pb_grpc.PaymentServicer):
    def Charge(self, request: pb.ChargeRequest, context: grpc.ServicerContext) -> pb.ChargeResponse:
        return REPLY


async def _serve_aio(addr: str) -> None:
    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_PaymentServicer_to_server(NoopAio(), server)  # type: ignore[abstract]
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    server.add_insecure_port(addr)
    await server.start()
    await server.wait_for_termination()


def _serve_sync(addr: str, workers: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
    pb_grpc.add_PaymentServicer_to_server(NoopSync(), server)  # type: ignore[abstract]
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(addr)
    server.start()
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_server", description=__doc__)
    parser.add_argument("--mode", choices=("aio", "sync"), required=True)
    parser.add_argument("--addr", required=True, help="host:port to listen on")
    parser.add_argument("--workers", type=int, default=8, help="sync: threads in the pool")
    args = parser.parse_args(argv)
    # Killed by the benchmark once measured: there is nothing to drain or close.
    if args.mode == "aio":
        event_loop.run(_serve_aio(args.addr))
    else:
        _serve_sync(args.addr, args.workers)


if __name__ == "__main__":
    main()
