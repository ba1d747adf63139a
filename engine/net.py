"""Where a gRPC caller finds a service, and the mutual-TLS files callers and services use.

A `*_SERVICE_ADDR` names one of three targets:

- one `host:port`, as it always did: grpc's default policy (one connection);
- a comma-separated list of replicas, `10.0.0.5:9092,10.0.0.6:9092`: grpc's static
  `ipv4:`/`ipv6:` target, one connection per replica, calls spread by `round_robin`;
- `dns:host:port`: every address the name resolves to is a replica, `round_robin` again.

`round_robin` sends each call to a replica whose connection is READY, so a replica that is
down (refused, reset, keepalive timed out) drops out of the rotation and comes back when it
answers again. A replica that is connected but answers UNAVAILABLE (its ledger is
unreachable, it is stopping) stays in the rotation: grpc's own retry policy sends such a
call again at once, and round_robin picks the next replica for it, so one sick replica
does not spend the saga's attempts. The services apply a mutating call once per (order,
operation), so a retry is safe; the call's deadline bounds all its attempts. Only when
every attempt fails does the saga see UNAVAILABLE and retry the step as usual.

A list takes IP addresses only: grpc's static targets do not resolve names, and a name
resolved once at start would outlive the replica behind it; `dns:` re-resolves.

Mutual TLS (`SAGA_GRPC_TLS_CERT`, `_KEY`, `_CA`: all three or none) is read into `TlsFiles`
here, checked with the standard library's `ssl` so that a wrong file is a settings error
at start, not a failed handshake at the first call. grpc checks the name each caller
dials against the service certificate's SAN; a list of replicas has no one name to check,
hence `SAGA_GRPC_TLS_SERVER_NAME` (grpc's `ssl_target_name_override`).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn

from engine.config import Address, SettingsError, format_addr, parse_addr

__all__ = [
    "TLS_VARS",
    "DnsName",
    "GrpcOption",
    "Replicas",
    "Target",
    "TlsFiles",
    "channel_options",
    "check_server_name",
    "env_target",
    "env_tls",
    "grpc_target",
    "is_loopback",
    "parse_target",
]


@dataclass(frozen=True, slots=True)
class Replicas:
    """Two or more replicas' IP addresses, all of one family."""

    addresses: tuple[Address, ...]

    def __str__(self) -> str:
        return ",".join(format_addr(a) for a in self.addresses)


@dataclass(frozen=True, slots=True)
class DnsName:
    """`dns:host:port`: every address the name resolves to is a replica."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"dns:{format_addr((self.host, self.port))}"


Target = Address | Replicas | DnsName

_LIST_HINT: Final = "e.g. 10.0.0.5:9092,10.0.0.6:9092"


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _serving_port(raw: str, name: str, entry: str) -> Address:
    addr = parse_addr(entry, name)
    if addr[1] == 0:
        raise SettingsError(f"{name}={raw!r}: {entry.strip()!r}: a caller needs a port 1-65535")
    return addr


def parse_target(raw: str, name: str) -> Target:
    """One `host:port`, a list of replicas, or `dns:host:port`; a mistake names `name`."""
    text = raw.strip()
    if text.startswith("dns:"):
        # grpc's spellings: dns:host:port and dns:///host:port (no DNS server authority:
        # the system's resolver is the one the rest of the host uses).
        rest = text.removeprefix("dns:").removeprefix("///")
        if rest.startswith("//"):
            raise SettingsError(f"{name}={raw!r}: expected dns:HOST:PORT (no DNS server name)")
        host, port = _serving_port(raw, name, rest)
        return DnsName(host, port)
    if "," not in text:
        return parse_addr(text, name)
    entries = text.split(",")
    if any(not e.strip() for e in entries):
        raise SettingsError(f"{name}={raw!r}: an empty entry in the list ({_LIST_HINT})")
    addresses = tuple(_serving_port(raw, name, e) for e in entries)
    versions = {_ip_version(host) for host, _ in addresses}
    if None in versions:
        raise SettingsError(
            f"{name}={raw!r}: a list of replicas takes IP addresses ({_LIST_HINT}); "
            "for a host name that resolves to every replica use dns:NAME:PORT"
        )
    if len(versions) > 1:
        raise SettingsError(f"{name}={raw!r}: mixes IPv4 and IPv6 addresses; use one family")
    if len(set(addresses)) < len(addresses):
        raise SettingsError(f"{name}={raw!r}: an address is given twice")
    return Replicas(addresses)


def env_target(env: Mapping[str, str], name: str, default: str) -> Target:
    return parse_target(env.get(name) or default, name)


def grpc_target(target: Target) -> str:
    """The target string grpc's channel takes."""
    match target:
        case Replicas(addresses):
            scheme = "ipv6" if _ip_version(addresses[0][0]) == 6 else "ipv4"
            return f"{scheme}:{target}"
        case DnsName():
            return str(target)
        case _:
            return format_addr(target)


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


TLS_VARS: Final = ("SAGA_GRPC_TLS_CERT", "SAGA_GRPC_TLS_KEY", "SAGA_GRPC_TLS_CA")
SERVER_NAME_VAR: Final = "SAGA_GRPC_TLS_SERVER_NAME"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM bytes as grpc's credentials take them: this process's certificate chain and
    key, and the CA whose signature the other side's certificate must carry."""

    cert: bytes
    key: bytes = field(repr=False)
    ca: bytes
    # The name callers check in every service's certificate instead of the host they
    # dial; None: the host they dial.
    server_name: str | None = None


def _encrypted_key(var: str, path: str) -> NoReturn:
    raise SettingsError(f"{var}={path!r}: the key is encrypted; grpc needs an unencrypted PEM key")


def env_tls(env: Mapping[str, str]) -> TlsFiles | None:
    """The three TLS files (all set) or None (none set); anything else is a SettingsError."""
    paths = {var: (env.get(var) or "").strip() for var in TLS_VARS}
    missing = [var for var, path in paths.items() if not path]
    server_name = (env.get(SERVER_NAME_VAR) or "").strip() or None
    if len(missing) == len(TLS_VARS):
        if server_name is not None:
            raise SettingsError(
                f"{SERVER_NAME_VAR} is set but TLS is not: set {', '.join(TLS_VARS)}"
            )
        return None
    if missing:
        raise SettingsError(
            f"{', '.join(TLS_VARS)} go together for mutual TLS: {', '.join(missing)} "
            "missing (set all three, or none)"
        )
    cert_var, key_var, ca_var = TLS_VARS
    data = {var: _read(var, path) for var, path in paths.items()}
    _check(paths, key_var)
    return TlsFiles(data[cert_var], data[key_var], data[ca_var], server_name)


def _read(var: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{var}={path!r}: cannot read it ({exc.strerror or exc})") from None


def _check(paths: Mapping[str, str], key_var: str) -> None:
    """Parse the files as OpenSSL will: the certificate and its key must be PEM and belong
    together, the CA file must hold at least one certificate."""
    cert_var, _, ca_var = TLS_VARS
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(
            paths[cert_var],
            paths[key_var],
            password=lambda: _encrypted_key(key_var, paths[key_var]),
        )
    except ssl.SSLError as exc:
        raise SettingsError(
            f"{cert_var}={paths[cert_var]!r}, {key_var}={paths[key_var]!r}: not a PEM "
            f"certificate and its private key ({exc.reason or exc})"
        ) from None
    try:
        context.load_verify_locations(cafile=paths[ca_var])
    except ssl.SSLError as exc:
        raise SettingsError(
            f"{ca_var}={paths[ca_var]!r}: not a PEM CA certificate ({exc.reason or exc})"
        ) from None


GrpcOption = tuple[str, str | int]

# grpc's service config for replicas: round_robin, and a call that a replica answers
# UNAVAILABLE is tried again, on the next replica in the rotation, up to 4 more times
# (grpc's most) before the caller sees it. Calls of other sagas share the rotation, so a
# retry may meet the same sick replica again: 5 attempts, each an even chance at worst
# with two replicas, times the saga's own attempts, make a step that fails on one sick
# replica while another serves a rarity, not a rule.
REPLICAS_SERVICE_CONFIG: Final = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],  # every method of the channel
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.02s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def channel_options(target: Target, tls: TlsFiles | None) -> tuple[GrpcOption, ...]:
    """grpc channel options for a target: round_robin and retries over replicas (one
    address keeps grpc's defaults); the name to check in the service's certificate when
    one is set."""
    options: list[GrpcOption] = []
    if not isinstance(target, tuple):
        options.append(("grpc.service_config", REPLICAS_SERVICE_CONFIG))
    if tls is not None and tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return tuple(options)


def check_server_name(targets: Mapping[str, Target], tls: TlsFiles | None) -> None:
    """Over TLS, a list of replicas needs SAGA_GRPC_TLS_SERVER_NAME: grpc checks one name
    per channel, and a list has no host name of its own to check."""
    if tls is None or tls.server_name is not None:
        return
    for var, target in targets.items():
        if isinstance(target, Replicas):
            raise SettingsError(
                f"{var} lists replicas and TLS is on: set {SERVER_NAME_VAR} to a DNS name "
                "that every replica's certificate carries in its subjectAltName"
            )
