"""A PostgreSQL server of the test's own, for the tests that kill, pause or partition it
(the shared server on 5432 is for tests that only read and write).

    with PgServer.create(tmp_path, listen=(net.ip,), trust=(str(net.subnet),)) as pg:
        url = pg.create_database("saga")   # postgresql://postgres@127.0.0.1:PORT/saga
        pg.url("saga", host=net.ip)        # the same database, as hosts on `net` reach it
        pg.kill()                          # SIGKILL the postmaster and every backend at once
        pg.start()                         # crash recovery; returns once it accepts queries
        pg.pause(); pg.resume()            # SIGSTOP / SIGCONT, the whole server

`initdb` into a fresh folder under the system's temporary folder (pytest's own is closed
to other users, and initdb and postgres refuse to run as root: the folder belongs to the
`postgres` OS user, who runs them), a free port, listening on 127.0.0.1 and the addresses
asked for, `trust` for loopback and the subnets asked for, fsync on. The server's output
goes to `postgres.log` in the test's folder, where tests/conftest.py collects process
logs. Stopped and its folder removed at the end of the `with` block (and at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import asyncpg
import pytest

from saga.probes import free_port

__all__ = ["PgServer", "pg_bin"]

OS_USER: Final = "postgres"
SUPERUSER: Final = "postgres"
# Enough for a few gateways, daemons and service replicas, each with its own pool.
SETTINGS: Final = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}

_LIVE: set[PgServer] = set()


def pg_bin() -> Path:
    """The binaries of the newest PostgreSQL installed; the test fails in one line if none."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail("no PostgreSQL server under /usr/lib/postgresql/*/bin", False)
    return found[-1].parent


class PgServer:
    def __init__(
        self,
        root: Path,
        log_path: Path,
        port: int,
        listen: Sequence[str],
        settings: Mapping[str, str],
    ) -> None:
        self.root = root  # the postgres user's folder: data/ and the Unix socket
        self.log_path = log_path
        self.port = port
        self.listen = ("127.0.0.1", *(a for a in listen if a != "127.0.0.1"))
        self.settings = {**SETTINGS, **settings}
        self.bin = pg_bin()
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(
        cls,
        log_dir: Path,
        *,
        listen: Sequence[str] = (),
        trust: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> PgServer:
        """initdb a new cluster; `listen`: addresses besides 127.0.0.1; `trust`: subnets
        (CIDR) whose clients may connect without a password, besides loopback."""
        if os.geteuid() != 0:
            pytest.fail("a test's own PostgreSQL runs as the postgres user: run as root", False)
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            pytest.fail(f"no `{OS_USER}` OS user to run a test's own PostgreSQL as", False)
        root = Path(tempfile.mkdtemp(prefix="saga-pg-"))
        os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(root, log_dir / "postgres.log", free_port(), listen, settings or {})
        _LIVE.add(server)
        try:
            server._initdb(trust)
            if start:
                server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> int:
        """The postmaster's pid (the server's process group has the same id)."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, database: str = "postgres", *, host: str = "127.0.0.1") -> str:
        return f"postgresql://{SUPERUSER}@{host}:{self.port}/{database}"

    # ---- life cycle ----------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout_s: float = 60.0) -> Self:
        """Start the server on its data (crash recovery first, after a kill); with `wait`,
        return once it accepts queries."""
        if self.running:
            raise RuntimeError(f"PostgreSQL on port {self.port} is already running")
        listen = ",".join(self.listen)
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.root), "-c", f"listen_addresses={listen}"]  # fmt: skip
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- postgres: start at {time.time():.3f}\n".encode())
            log.flush()
            # Its own process group: a kill or a pause reaches every backend at once.
            self._proc = self._as_postgres(argv, stdout=log, start_new_session=True)
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready in {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.05)

    def ready(self) -> bool:
        """Whether it accepts connections now (pg_isready; not during crash recovery)."""
        probe = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-t", "2"],
            capture_output=True,
        )  # fmt: skip
        return probe.returncode == 0

    def kill(self) -> None:
        """SIGKILL the whole server at once (the postmaster and every backend): what a crash
        of its machine does to it, short of losing the page cache; then wait until every
        process of it is gone, so that a restart finds its port and memory free."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._wait_group_gone(self._proc.pid)
        self._proc = None

    def restart(self, *, wait: bool = True) -> Self:
        self.kill()
        return self.start(wait=wait)

    def pause(self) -> None:
        """SIGSTOP every process of the server: connections stay open, nothing answers."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> None:
        """A fast shutdown (SIGINT: abort sessions, checkpoint); SIGKILL past `timeout_s`."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGCONT)  # a paused server cannot stop
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._wait_group_gone(self._proc.pid)
        self._proc = None

    def close(self) -> None:
        """Stop it and remove its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- SQL, from the test --------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """A new database on this server; its URL (from this machine)."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, sql: str, *args: object, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url(database), timeout=10)
            try:
                await conn.execute(sql, *args)
            finally:
                await conn.close()

        asyncio.run(run())

    def fetch(self, sql: str, *args: object, database: str = "postgres") -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.url(database), timeout=10)
            try:
                return [tuple(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    # ---- helpers -------------------------------------------------------------------------

    def _initdb(self, trust: Sequence[str]) -> None:
        # --no-sync: only the server's crashes are tested, never the machine's, and the
        # server itself runs with fsync on; syncing a fresh cluster costs a second.
        argv = [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]  # fmt: skip
        with self.log_path.open("ab") as log:
            code = self._as_postgres(argv, stdout=log).wait(120)
        if code != 0:
            raise RuntimeError(f"initdb exited with {code}:\n{self.tail()}")
        with (self.data / "pg_hba.conf").open("a") as hba:
            for subnet in trust:
                hba.write(f"host all all {subnet} trust\n")

    def _as_postgres(
        self, argv: Sequence[str], *, stdout: Any, start_new_session: bool = False
    ) -> subprocess.Popen[bytes]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        return subprocess.Popen(
            list(argv),
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            user=OS_USER,
            group=OS_USER,
            extra_groups=[],
            start_new_session=start_new_session,
        )

    @staticmethod
    def _wait_group_gone(pgid: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_close_all)
