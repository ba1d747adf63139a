"""The callers' targets (one address, replicas, dns:) and the mutual-TLS settings: what
each spelling becomes for grpc, and a clear one-line error for every mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import SettingsError
from engine.net import (
    DnsName,
    Replicas,
    channel_options,
    env_tls,
    grpc_target,
    is_loopback,
    parse_target,
)
from orders.participants import ServiceAddresses
from services.settings import ServiceSettings
from tests.support.certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    ("raw", "target", "grpc"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090), "127.0.0.1:9090"),
        ("order:9090", ("order", 9090), "order:9090"),
        ("[::1]:9090", ("::1", 9090), "[::1]:9090"),
        (
            "10.0.0.5:9092, 10.0.0.6:9092",
            Replicas((("10.0.0.5", 9092), ("10.0.0.6", 9092))),
            "ipv4:10.0.0.5:9092,10.0.0.6:9092",
        ),
        (
            "[::1]:9092,[::2]:9092",
            Replicas((("::1", 9092), ("::2", 9092))),
            "ipv6:[::1]:9092,[::2]:9092",
        ),
        ("dns:inventory.internal:9092", DnsName("inventory.internal", 9092), None),
        ("dns:///inventory.internal:9092", DnsName("inventory.internal", 9092), None),
    ],
)
def test_each_spelling_becomes_a_grpc_target(raw: str, target: object, grpc: str | None) -> None:
    got = parse_target(raw, "INVENTORY_SERVICE_ADDR")
    assert got == target
    assert grpc_target(got) == (grpc or "dns:inventory.internal:9092")
    config = dict(channel_options(got, None)).get("grpc.service_config")
    balanced = config is not None and json.loads(str(config))["loadBalancingConfig"] == [
        {"round_robin": {}}
    ]
    assert balanced == (not isinstance(got, tuple)), "one address keeps grpc's default policy"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("10.0.0.5:9092,,10.0.0.6:9092", "an empty entry"),
        ("10.0.0.5:9092,", "an empty entry"),
        ("10.0.0.5:9092,10.0.0.6:http", "is not a number"),
        ("10.0.0.5:9092,10.0.0.6:70000", "between 0 and 65535"),
        ("10.0.0.5:9092,10.0.0.6", "expected HOST:PORT"),
        ("10.0.0.5:9092,10.0.0.6:0", "port 1-65535"),
        ("order-a:9092,order-b:9092", "takes IP addresses"),
        ("10.0.0.5:9092,[::1]:9092", "mixes IPv4 and IPv6"),
        ("10.0.0.5:9092,10.0.0.5:9092", "given twice"),
        ("dns:", "expected HOST:PORT"),
        ("dns:inventory", "expected HOST:PORT"),
        ("dns://8.8.8.8/inventory:9092", "no DNS server name"),
    ],
)
def test_a_bad_list_is_one_clear_line(raw: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ServiceAddresses.from_env({"INVENTORY_SERVICE_ADDR": raw})
    message = caught.value.message
    assert says in message and "INVENTORY_SERVICE_ADDR" in message and "\n" not in message


def test_a_service_listens_on_one_address() -> None:
    for raw in ("127.0.0.1:9092,127.0.0.1:9093", "dns:localhost:9092"):
        with pytest.raises(SettingsError, match="listens on one HOST:PORT"):
            ServiceSettings.from_env("inventory", {"INVENTORY_SERVICE_ADDR": raw})


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "inventory"))


def test_tls_all_three_or_none(pki: Pki) -> None:
    assert env_tls({}) is None
    tls = env_tls(pki.env(pki.client))
    assert tls is not None and tls.cert == pki.client.cert.read_bytes()
    assert "PRIVATE KEY" not in repr(tls), "a key never ends up in a log line"
    assert ServiceSettings.from_env("order", pki.env(pki.server)).tls is not None
    partial = pki.env(pki.client)
    del partial["SAGA_GRPC_TLS_KEY"]
    with pytest.raises(SettingsError, match="SAGA_GRPC_TLS_KEY missing"):
        env_tls(partial)
    with pytest.raises(SettingsError, match="TLS is not"):
        env_tls({"SAGA_GRPC_TLS_SERVER_NAME": "services.internal"})


def test_unreadable_or_invalid_pem_is_a_settings_error(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "cannot read": {"SAGA_GRPC_TLS_CA": str(tmp_path / "missing.pem")},
        "not a PEM CA certificate": {"SAGA_GRPC_TLS_CA": str(garbage)},
        "not a PEM certificate and its private key": {"SAGA_GRPC_TLS_CERT": str(garbage)},
        # The client's certificate with the server's key: they do not belong together.
        "and its private key": {"SAGA_GRPC_TLS_KEY": str(pki.server.key)},
    }
    for says, change in cases.items():
        with pytest.raises(SettingsError, match=says) as caught:
            env_tls({**pki.env(pki.client), **change})
        assert "\n" not in caught.value.message


def test_an_encrypted_key_is_refused_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    import subprocess

    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pki.client.key), "-aes256", "-passout", "pass:secret"],
        check=True,
        stdout=encrypted.open("wb"),
    )
    with pytest.raises(SettingsError, match="encrypted"):
        env_tls({**pki.env(pki.client), "SAGA_GRPC_TLS_KEY": str(encrypted)})


def test_replicas_over_tls_need_a_server_name(pki: Pki) -> None:
    env = {**pki.env(pki.client), "PAYMENT_SERVICE_ADDR": "10.0.0.5:9091,10.0.0.6:9091"}
    with pytest.raises(SettingsError, match="SAGA_GRPC_TLS_SERVER_NAME"):
        ServiceAddresses.from_env(env)
    named = ServiceAddresses.from_env({**env, "SAGA_GRPC_TLS_SERVER_NAME": "payment.internal"})
    assert ("grpc.ssl_target_name_override", "payment.internal") in channel_options(
        named.payment, named.tls
    )
