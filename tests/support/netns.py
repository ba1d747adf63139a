"""Test hosts: each one a Linux network namespace on a private subnet, so that what the
processes of a multi-host test say to each other really crosses a network (an interface,
an address, a route) and can be cut with a firewall rule, as between machines.

    with Network.create() as net:            # a bridge in the root namespace, 10.213.X.0/24
        a = net.add_host("gw-a")             # namespace + veth into the bridge, 10.213.X.2
        proc = SagaProcess([...], env, log, ready, host=a)   # runs `ip netns exec` a's ns
        a.partition(net.ip, 5432)            # nftables drop, inside a's namespace
        a.heal()
        a.kill_all()                         # SIGKILL every process in the namespace

Topology: one bridge in the root namespace holds the subnet's first address (`net.ip`);
each host is a namespace with a veth pair, one end in the bridge, the other (`eth0`) in
the namespace with the host's own address, and loopback up. Hosts reach each other through
the bridge and reach the root namespace at `net.ip`, where the test itself runs: its
clients, its probes and a PostgreSQL server of its own (tests/support/pg_server.py) listen
or connect there without entering any namespace. A partition is a drop rule inside the
host's namespace (both directions), so it cuts that host alone, as a dead link would.

Names carry this process's id (namespaces `sagat-PID-N`, bridges `sgbPID-N`, veths
`sgvPID-N`, in hex to fit the 15-character limit of an interface name), so parallel runs
never clash; whatever a run killed with SIGKILL left behind is removed by the next one
(its process id is gone). Everything is removed at `close`, at the end of the `with`
block, and at interpreter exit. It takes root (`ip netns`, `nft`): elsewhere the test
fails saying so in one line.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import pytest

__all__ = ["Host", "Network", "require_hosts"]

# A private range unlikely to be used by the machine or its containers; each network takes
# one /24 of it at random, one that no interface of the machine is on.
SUPERNET: Final = ipaddress.IPv4Network("10.213.0.0/16")
NS_PREFIX: Final = "sagat-"
BRIDGE_PREFIX: Final = "sgb"
VETH_PREFIX: Final = "sgv"
TABLE: Final = "saga_partition"  # the nftables table of a host's partitions

_LIVE: set[Network] = set()
_counter = 0


def require_hosts() -> None:
    """Fail the calling test in one line where test hosts cannot be made here."""
    if os.geteuid() != 0:
        pytest.fail("test hosts need root (ip netns, nftables); run the tests as root", False)
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            pytest.fail(f"test hosts need `{tool}` (Debian package {package})", False)


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _next_id() -> str:
    global _counter
    _counter += 1
    return f"{os.getpid():x}-{_counter}"


@dataclass(eq=False)
class Host:
    """One test host: a network namespace with one address on its network."""

    label: str  # what the test calls it (log and error messages)
    ns: str
    ip: str
    _rules: dict[tuple[str, int | None], list[tuple[str, int]]] = field(default_factory=dict)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host. `ip netns exec` execs it once inside (no fork in
        between), so the process started is the command itself: its pid is the one to
        SIGKILL."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside this host to its end; its output as text."""
        return _run(self.wrap(argv), check=check)

    def pids(self) -> list[int]:
        """Every process that runs inside this host now."""
        out = _run(["ip", "netns", "pids", self.ns], check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, timeout_s: float = 10.0) -> list[int]:
        """SIGKILL every process inside this host (the machine died); return once they are
        gone. Their pids. The network stays: the host can be used again."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        # Our own children stay zombies until their Popen reaps them: those have left the
        # namespace already, so its pid list empties either way.
        while self.pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {self.label}: processes survived SIGKILL")
            time.sleep(0.02)
        return pids

    # ---- partitions ----------------------------------------------------------------------

    def partition(self, address: str, port: int | None = None) -> None:
        """Drop every packet between this host and `address` (only its TCP `port`, when
        given) in both directions, from now until `heal`: the peer neither answers nor
        refuses; connections already open stall, as across a dead link."""
        self._ensure_table()
        if (address, port) in self._rules:
            return
        match_out = f"ip daddr {address}" + (f" tcp dport {port}" if port else "")
        match_in = f"ip saddr {address}" + (f" tcp sport {port}" if port else "")
        handles = [
            ("out", self._add_rule("out", match_out)),
            ("in", self._add_rule("in", match_in)),
        ]
        self._rules[(address, port)] = handles

    def heal(self, address: str | None = None, port: int | None = None) -> None:
        """Remove the partition from `address` (and `port`), or every partition."""
        keys = [k for k in self._rules if address is None or k == (address, port)]
        for key in keys:
            for chain, handle in self._rules.pop(key):
                self.run(["nft", "delete", "rule", "inet", TABLE, chain, "handle", str(handle)])

    def dropped(self) -> int:
        """Packets the partition rules have dropped so far (to show a partition was hit)."""
        if not self._rules:
            return 0
        out = self.run(["nft", "list", "table", "inet", TABLE]).stdout
        return sum(int(n) for n in re.findall(r"packets (\d+)", out))

    def _ensure_table(self) -> None:
        if self.run(["nft", "list", "table", "inet", TABLE], check=False).returncode == 0:
            return
        self.run(["nft", "add", "table", "inet", TABLE])
        for chain, hook in (("out", "output"), ("in", "input")):
            spec = f"{{ type filter hook {hook} priority 0; policy accept; }}"
            self.run(["nft", "add", "chain", "inet", TABLE, chain, spec])

    def _add_rule(self, chain: str, match: str) -> int:
        out = self.run(
            ["nft", "--echo", "--handle", "add", "rule", "inet", TABLE, chain,
             *match.split(), "counter", "drop"]
        ).stdout  # fmt: skip
        found = re.search(r"# handle (\d+)", out)
        if found is None:
            raise RuntimeError(f"host {self.label}: nft gave no rule handle: {out!r}")
        return int(found.group(1))


@dataclass(eq=False)
class Network:
    """A bridge in the root namespace on a /24 of its own, and the hosts on it."""

    bridge: str
    subnet: ipaddress.IPv4Network
    hosts: list[Host] = field(default_factory=list)
    _veths: list[str] = field(default_factory=list)

    @property
    def ip(self) -> str:
        """The root namespace's address on this network (where the test itself is)."""
        return str(self.subnet.network_address + 1)

    @classmethod
    def create(cls) -> Network:
        require_hosts()
        sweep_leftovers()
        bridge = f"{BRIDGE_PREFIX}{_next_id()}"
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        net = cls(bridge, _claim_subnet(bridge))
        _LIVE.add(net)
        _run(["ip", "link", "set", bridge, "up"])
        return net

    def add_host(self, label: str) -> Host:
        index = len(self.hosts) + 2  # .1 is the bridge
        ip = str(self.subnet.network_address + index)
        suffix = _next_id()
        ns, veth = f"{NS_PREFIX}{suffix}", f"{VETH_PREFIX}{suffix}"
        host = Host(label, ns, ip)
        _run(["ip", "netns", "add", ns])
        self.hosts.append(host)
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        self._veths.append(veth)
        _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        host.run(["ip", "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0"])
        host.run(["ip", "link", "set", "eth0", "up"])
        host.run(["ip", "link", "set", "lo", "up"])
        return host

    def close(self) -> None:
        """SIGKILL every process in every host, then remove the hosts and the bridge."""
        for host in self.hosts:
            with contextlib.suppress(RuntimeError):
                host.kill_all()
            _run(["ip", "netns", "del", host.ns], check=False)
        for veth in self._veths:  # gone with their namespace, unless it outlived us
            _run(["ip", "link", "del", veth], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        self.hosts.clear()
        _LIVE.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    return {ipaddress.IPv4Interface(m).network for m in re.findall(r"inet (\S+)", out)}


def _claim_subnet(bridge: str) -> ipaddress.IPv4Network:
    """Put a free /24 of SUPERNET on `bridge`. Two runs may pick the same one at once:
    the one that sees the other's address too gives it up and picks again."""
    candidates = list(SUPERNET.subnets(new_prefix=24))
    rng = random.Random()
    for _ in range(50):
        subnet = rng.choice(candidates)
        if subnet in _subnets_in_use():
            continue
        address = f"{subnet.network_address + 1}/{subnet.prefixlen}"
        _run(["ip", "addr", "add", address, "dev", bridge])
        out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
        owners = [
            line.split()[1]
            for line in out.splitlines()
            if (m := re.search(r"inet (\S+)", line))
            and ipaddress.IPv4Interface(m.group(1)).network == subnet
        ]
        if owners == [bridge]:
            return subnet
        _run(["ip", "addr", "del", address, "dev", bridge], check=False)
    raise RuntimeError(f"no free /24 in {SUPERNET} after 50 tries")


def _owner_alive(name: str, prefix: str) -> bool:
    """Whether the process whose hex id is in `name` (after `prefix`) still runs."""
    try:
        pid = int(name[len(prefix) :].split("-", 1)[0], 16)
    except ValueError:
        return True  # not one of ours: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> None:
    """Remove the namespaces and bridges of runs that died without cleaning up."""
    for line in _run(["ip", "netns", "list"]).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(NS_PREFIX) and not _owner_alive(ns, NS_PREFIX):
            for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", ns], check=False)
    links = _run(["ip", "-o", "link", "show"]).stdout
    for name in re.findall(r"^\d+: ([^:@]+)", links, flags=re.MULTILINE):
        for prefix in (BRIDGE_PREFIX, VETH_PREFIX):
            if name.startswith(prefix) and not _owner_alive(name, prefix):
                _run(["ip", "link", "del", name], check=False)


def _close_all() -> None:
    for net in list(_LIVE):
        net.close()


atexit.register(_close_all)
