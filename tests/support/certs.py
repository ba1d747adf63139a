"""Certificates for the mutual-TLS tests, made with the `openssl` CLI (the venv has no
`cryptography`): a CA, a server and a client certificate it signs, a second CA with a
client certificate of its own, and a self-signed client certificate.

    pki = make_pki(tmp_path / "pki")
    env = pki.env(pki.client)      # SAGA_GRPC_TLS_CERT/_KEY/_CA for a caller
    env = pki.env(pki.server)      # ... for a service

The server certificate names 127.0.0.1 and ::1 as IP SANs and `localhost` as a DNS SAN: a
caller checks the name it dialled against them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["KeyPair", "Pki", "make_pki"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path  # the CA every service and caller trusts
    server: KeyPair
    client: KeyPair
    other_ca_client: KeyPair  # signed by a CA nobody trusts
    self_signed: KeyPair

    def env(self, pair: KeyPair, ca: Path | None = None) -> dict[str, str]:
        return {
            "SAGA_GRPC_TLS_CERT": str(pair.cert),
            "SAGA_GRPC_TLS_KEY": str(pair.key),
            "SAGA_GRPC_TLS_CA": str(ca or self.ca),
        }


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _ca(folder: Path, name: str) -> KeyPair:
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return pair


def _leaf(folder: Path, name: str, ca: KeyPair, extensions: str) -> KeyPair:
    pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
    csr = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", *_KEY, "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(pair.cert), "-days", "2", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    return pair


SERVER_EXT = (
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
    "extendedKeyUsage=serverAuth\n"
    "basicConstraints=critical,CA:FALSE\n"
)
CLIENT_EXT = "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n"


def make_pki(folder: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "ca")
    other = _ca(folder, "other-ca")
    intruder = folder / "self-signed"
    self_signed = KeyPair(intruder.with_suffix(".pem"), intruder.with_suffix(".key"))
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(self_signed.key), "-out", str(self_signed.cert),
        "-days", "2", "-subj", "/CN=self-signed",
        cwd=folder,
    )  # fmt: skip
    return Pki(
        ca=ca.cert,
        server=_leaf(folder, "server", ca, SERVER_EXT),
        client=_leaf(folder, "client", ca, CLIENT_EXT),
        other_ca_client=_leaf(folder, "other-client", other, CLIENT_EXT),
        self_signed=self_signed,
    )
