"""The one place callers open gRPC channels to the services: plaintext or mutual TLS,
one address or replicas (engine/net.py says which), for asyncio and for blocking code."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc import aio

from engine.net import GrpcOption, Target, TlsFiles, channel_options, grpc_target

__all__ = ["aio_channel", "credentials", "sync_channel"]


def credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """This caller's certificate for the services to check, and the CA to check theirs."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )


def aio_channel(
    target: Target,
    tls: TlsFiles | None,
    *,
    options: Sequence[GrpcOption] = (),
    interceptors: Sequence[aio.ClientInterceptor] | None = None,
) -> aio.Channel:
    where = grpc_target(target)
    opts = [*options, *channel_options(target, tls)]
    if tls is None:
        return aio.insecure_channel(where, options=opts, interceptors=interceptors)
    return aio.secure_channel(where, credentials(tls), options=opts, interceptors=interceptors)


def sync_channel(target: Target, tls: TlsFiles | None) -> grpc.Channel:
    where = grpc_target(target)
    opts = list(channel_options(target, tls))
    if tls is None:
        return grpc.insecure_channel(where, options=opts)
    return grpc.secure_channel(where, credentials(tls), options=opts)
