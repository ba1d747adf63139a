"""Scale-out suites: several test hosts (network namespaces, tests/support/netns.py) on one
private network, and a PostgreSQL server of the test's own (tests/support/pg_server.py)
that the hosts reach across it. They need root: elsewhere they fail saying so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Network
from tests.support.pg_server import PgServer


@pytest.fixture
def network() -> Iterator[Network]:
    with Network.create() as net:
        yield net


@pytest.fixture
def pg(tmp_path: Path, network: Network) -> Iterator[PgServer]:
    """A server of the test's own on this machine's address on `network`, open to its hosts."""
    with PgServer.create(tmp_path, listen=(network.ip,), trust=(str(network.subnet),)) as server:
        yield server
