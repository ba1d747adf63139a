"""A VFS of the tests' own for trouble below SQLite: storage that fails (SQLITE_FULL,
SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC on the N-th write or sync of a file) and power cuts.

`FaultVFS` wraps the default VFS and passes every call through, so the files on disk stay
what the kernel holds (a SIGKILL loses none of it). Beside them a `PowerModel` keeps what a
power cut would leave, and takes a `Crash` (a snapshot of that) at every sync and, when
asked, at random writes:

- per file, its content as of its last xSync, and every write and truncation since;
- per folder, the names created or deleted since the folder was last synced. Only the folder
  syncs the model sees count: xDelete's `syncdir`, and the ones the program reports
  (`folder_synced`; the tests wrap engine.sqlite.sync_folder). The unix VFS's own folder
  fsync, a best effort inside its xSync whose errors SQLite ignores, is not seen: the model
  is strict POSIX, where a name is durable only once its folder is synced.

`Crash.image(folder, rng)` writes a folder that such a power cut could leave: each file's
synced content plus a random subset of its later writes, some torn at 512-byte sectors;
each name created or deleted since its folder's sync kept or undone (per name, a random
prefix of its changes). `worst=True`: nothing unsynced survives. `-shm` files are left
out: SQLite rebuilds the WAL index from the WAL.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import apsw
from typing_extensions import Buffer

__all__ = [
    "Crash",
    "Fault",
    "FaultVFS",
    "PowerModel",
    "faulty_env",
    "install_from_env",
    "installed",
    "without_faults",
]

SECTOR: Final = 512
CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Write:
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Truncate:
    size: int


_Op = _Write | _Truncate


def _apply(chunks: dict[int, bytes], size: int, op: _Op) -> int:
    """Apply `op` to a content kept as CHUNK-sized blocks (a missing block reads as zeros);
    return the new size. Blocks are replaced, never changed, so snapshots share them."""
    if isinstance(op, _Truncate):
        for index in [i for i in chunks if i * CHUNK >= op.size]:
            del chunks[index]
        last = op.size // CHUNK
        if last in chunks:
            keep = op.size - last * CHUNK
            chunks[last] = chunks[last][:keep] + bytes(CHUNK - keep)
        return op.size
    pos, data = op.offset, op.data
    while data:
        index, at = divmod(pos, CHUNK)
        part = data[: CHUNK - at]
        old = chunks.get(index, bytes(CHUNK))
        chunks[index] = old[:at] + part + old[at + len(part) :]
        pos, data = pos + len(part), data[len(part) :]
    return max(size, op.offset + len(op.data))


def _content(chunks: Mapping[int, bytes], size: int) -> bytes:
    blocks = [chunks.get(i, bytes(CHUNK)) for i in range((size + CHUNK - 1) // CHUNK)]
    return b"".join(blocks)[:size]


@dataclass(slots=True)
class _File:
    chunks: dict[int, bytes] = field(default_factory=dict)  # durable content
    size: int = 0  # durable size
    pending: list[_Op] = field(default_factory=list)  # since the last xSync, in order


@dataclass(slots=True)
class _Name:
    durable: int | None  # the file the name held at its folder's last sync (None: absent)
    changes: list[int | None] = field(default_factory=list)  # bindings since, in order

    @property
    def current(self) -> int | None:
        return self.changes[-1] if self.changes else self.durable


FileState = tuple[Mapping[int, bytes], int, tuple[_Op, ...]]


@dataclass(frozen=True, slots=True)
class Crash:
    """What a power cut at one moment could leave; `acked` counts the acknowledgements the
    test had recorded before it (each of them must survive in every image)."""

    label: str
    acked: int
    files: Mapping[int, FileState]
    names: Mapping[str, tuple[int | None, tuple[int | None, ...]]]  # relative path -> binding

    def image(self, into: Path, rng: random.Random, *, worst: bool = False) -> None:
        into.mkdir(parents=True, exist_ok=True)
        for rel, (durable, changes) in self.names.items():
            keep = 0 if worst or not changes else rng.randint(0, len(changes))
            fid = changes[keep - 1] if keep else durable
            if fid is None:
                continue
            chunks, size, pending = self.files[fid]
            blocks = dict(chunks)
            for op in pending:
                if worst:
                    break
                size = _survivor(blocks, size, op, rng)
            (into / rel).write_bytes(_content(blocks, size))

    def dir_changes(self) -> int:
        """How many names have changes not yet made durable by a folder sync."""
        return sum(1 for _, changes in self.names.values() if changes)


def _survivor(chunks: dict[int, bytes], size: int, op: _Op, rng: random.Random) -> int:
    """Apply what of an unsynced `op` a power cut kept: all, nothing, or (a write) some of
    its 512-byte sectors."""
    fate = rng.random()
    if fate < 0.4:
        return size  # lost
    if isinstance(op, _Truncate) or fate < 0.7:
        return _apply(chunks, size, op)
    first = op.offset - op.offset % SECTOR
    for start in range(first, op.offset + len(op.data), SECTOR):
        if rng.random() < 0.5:
            lo, hi = max(start, op.offset), min(start + SECTOR, op.offset + len(op.data))
            size = _apply(chunks, size, _Write(lo, op.data[lo - op.offset : hi - op.offset]))
    return size


class PowerModel:
    """What is durable in the files under `root` (see the module). `progress()` counts the
    test's acknowledgements; `random_points` is the chance of a crash point at a write."""

    def __init__(
        self, root: Path, progress: Callable[[], int], *, seed: int, random_points: float = 0.0
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.crashes: list[Crash] = []
        self.syncs = 0
        self._progress = progress
        self._rng = random.Random(seed)
        self._random_points = random_points
        self._lock = threading.RLock()
        self._files: dict[int, _File] = {}
        self._names: dict[str, _Name] = {}
        self._next_id = 1

    def tracks(self, path: str | None) -> bool:
        return path is not None and not path.endswith("-shm") and Path(path).parent == self.root

    def _new(self, content: bytes = b"") -> int:
        fid, self._next_id = self._next_id, self._next_id + 1
        state = _File()
        state.size = _apply(state.chunks, 0, _Write(0, content)) if content else 0
        self._files[fid] = state
        return fid

    def _file(self, path: str) -> _File | None:
        name = self._names.get(path)
        fid = None if name is None else name.current
        return None if fid is None else self._files[fid]

    # ---- what the VFS reports --------------------------------------------------------------

    def opened(self, path: str, existed: bool) -> None:
        with self._lock:
            name = self._names.get(path)
            if existed and (name is None or name.current is None):
                # There before the model: taken as durable, name and content.
                self._names[path] = _Name(self._new(Path(path).read_bytes()))
            elif not existed:
                if name is None:
                    name = self._names[path] = _Name(None)
                name.changes.append(self._new())

    def wrote(self, path: str, offset: int, data: bytes) -> None:
        with self._lock:
            state = self._file(path)
            if state is not None:
                state.pending.append(_Write(offset, data))
        if self._random_points and self._rng.random() < self._random_points:
            self.crash_point(f"write {Path(path).name}@{offset}")

    def truncated(self, path: str, size: int) -> None:
        with self._lock:
            state = self._file(path)
            if state is not None:
                state.pending.append(_Truncate(size))

    def synced(self, path: str) -> None:
        with self._lock:
            state = self._file(path)
            if state is None:
                return
            self.syncs += 1
            for op in state.pending:
                state.size = _apply(state.chunks, state.size, op)
            state.pending.clear()
        self.crash_point(f"after sync {self.syncs} of {Path(path).name}")

    def deleted(self, path: str, syncdir: bool) -> None:
        with self._lock:
            name = self._names.get(path)
            if name is not None and name.current is not None:
                name.changes.append(None)
            if syncdir:
                self.folder_synced(Path(path).parent)

    def folder_synced(self, folder: Path) -> None:
        with self._lock:
            if Path(os.path.realpath(folder)) != self.root:
                return
            for name in self._names.values():
                name.durable, name.changes = name.current, []

    def crash_point(self, label: str) -> None:
        acked = self._progress()  # first: whatever was acknowledged is durable by now
        with self._lock:
            files = {
                fid: (dict(f.chunks), f.size, tuple(f.pending)) for fid, f in self._files.items()
            }
            names = {
                os.path.relpath(path, self.root): (n.durable, tuple(n.changes))
                for path, n in self._names.items()
            }
        self.crashes.append(Crash(label, acked, files, names))


@dataclass(slots=True)
class Fault:
    """Fail the `nth` write or sync (counted from arming, or from when the file `when`
    exists) of the file named `file` with the SQLite result `code`; `lasting`: every later
    one too (a disk that stays full). A failing write writes a part of its data first when
    `short` (ENOSPC part-way)."""

    file: str
    call: Literal["write", "sync"]
    nth: int
    code: int
    lasting: bool = False
    short: bool = False
    when: str | None = None
    seen: int = 0
    fired: int = 0

    def hits(self, name: str, call: str) -> bool:
        if name != self.file or call != self.call:
            return False
        if self.when is not None and not os.path.exists(self.when):
            return False
        self.seen += 1
        if self.seen == self.nth or (self.lasting and self.seen > self.nth):
            self.fired += 1
            return True
        return False


class FaultVFS(apsw.VFS):
    """The default VFS, plus faults and (with a model) the power-cut bookkeeping."""

    def __init__(self, model: PowerModel | None = None, *, name: str = "faultvfs") -> None:
        self.model = model
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        super().__init__(name, "unix", makedefault=True)

    def arm(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def disarm(self) -> None:
        with self._lock:
            self.faults.clear()

    def fault(self, path: str | None, call: str) -> Fault | None:
        if path is None:
            return None
        name = Path(path).name
        with self._lock:
            for fault in self.faults:
                if fault.hits(name, call):
                    return fault
        return None

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        path = None if path is None else os.path.normpath(path)
        existed = path is not None and os.path.exists(path)
        opened = _FaultFile(self, path, name, flags)
        if self.model is not None and self.model.tracks(path):
            assert path is not None
            self.model.opened(path, existed)
        return opened

    def xDelete(self, filename: str, syncdir: bool) -> None:
        super().xDelete(filename, syncdir)
        path = os.path.normpath(filename)
        if self.model is not None and self.model.tracks(path):
            self.model.deleted(path, syncdir)


class _FaultFile(apsw.VFSFile):
    def __init__(
        self,
        vfs: FaultVFS,
        path: str | None,
        name: str | apsw.URIFilename | None,
        flags: list[int],
    ) -> None:
        self._vfs = vfs
        self._path = path
        model = vfs.model
        self._model = model if model is not None and model.tracks(path) else None
        super().__init__("unix", name, flags)

    def xWrite(self, data: Buffer, offset: int) -> None:
        payload = bytes(data)
        fault = self._vfs.fault(self._path, "write")
        if fault is not None:
            if fault.short and len(payload) > 1:
                self._write(payload[: len(payload) // 2], offset)
            raise apsw.exception_for(fault.code)
        self._write(payload, offset)

    def _write(self, payload: bytes, offset: int) -> None:
        super().xWrite(payload, offset)
        if self._model is not None:
            assert self._path is not None
            self._model.wrote(self._path, offset, payload)

    def xTruncate(self, newsize: int) -> None:
        super().xTruncate(newsize)
        if self._model is not None:
            assert self._path is not None
            self._model.truncated(self._path, newsize)

    def xSync(self, flags: int) -> None:
        fault = self._vfs.fault(self._path, "sync")
        if fault is not None:
            if self._model is not None:
                self._model.crash_point(f"failed sync of {Path(self._path or '').name}")
            raise apsw.exception_for(fault.code)
        if self._model is not None:
            self._model.crash_point(f"before sync of {Path(self._path or '').name}")
        super().xSync(flags)
        if self._model is not None:
            assert self._path is not None
            self._model.synced(self._path)


@contextlib.contextmanager
def installed(model: PowerModel | None = None) -> Iterator[FaultVFS]:
    """The fault VFS as the process's default VFS for the block (every connection the
    engine opens goes through it), then the unix VFS again."""
    vfs = FaultVFS(model)
    try:
        yield vfs
    finally:
        vfs.unregister()


FAULT_VAR: Final = "SAGA_TEST_SQLITE_FAULT"
_SITE: Final = Path(__file__).with_name("sqlite_faults")  # holds the sitecustomize hook
# The hook imports this module as `tests.support.faultvfs`: the checkout's root must be on
# the child's path too (an installed project does not carry its tests).
_ROOT: Final = Path(__file__).resolve().parents[2]


def faulty_env(fault: Fault) -> dict[str, str]:
    """The environment that makes a `python -m saga ...` child run its SQLite through the
    fault VFS with `fault` armed (Python imports tests/support/sqlite_faults/sitecustomize.py
    at start-up when that folder is on PYTHONPATH)."""
    spec = ":".join(
        [fault.file, fault.call, str(fault.nth), str(fault.code), str(int(fault.lasting))]
    )
    extra = (str(_SITE), str(_ROOT), os.environ.get("PYTHONPATH", ""))
    path = os.pathsep.join(p for p in extra if p)
    env = {"PYTHONPATH": path, FAULT_VAR: spec}
    if fault.when is not None:
        env[f"{FAULT_VAR}_WHEN"] = fault.when
    return env


def without_faults(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without what `faulty_env` added: a child started with it runs plain SQLite."""
    plain = {k: v for k, v in env.items() if not k.startswith(FAULT_VAR)}
    # The checkout's root may stay: it only adds the tests to what the child could import.
    paths = [p for p in plain.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(_SITE)]
    plain["PYTHONPATH"] = os.pathsep.join(paths)
    return plain


def install_from_env(env: Mapping[str, str]) -> FaultVFS | None:
    """The fault VFS, made the default and armed, if `env` asks for one (see faulty_env)."""
    spec = env.get(FAULT_VAR)
    if not spec:
        return None
    file, call, nth, code, lasting = spec.split(":")
    assert call in ("write", "sync"), spec
    vfs = FaultVFS()
    vfs.arm(
        Fault(
            file,
            "write" if call == "write" else "sync",
            int(nth),
            int(code),
            lasting=lasting == "1",
            when=env.get(f"{FAULT_VAR}_WHEN"),
        )
    )
    return vfs
