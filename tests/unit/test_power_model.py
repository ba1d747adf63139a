"""The power-cut model of tests/support/faultvfs.py: what an image keeps is what strict
POSIX promises after a power cut, no more (else the power-loss tests prove nothing)."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.faultvfs import PowerModel


def model(tmp_path: Path) -> PowerModel:
    return PowerModel(tmp_path, lambda: 0, seed=1)


def test_only_synced_writes_survive_the_worst_cut(tmp_path: Path) -> None:
    m = model(tmp_path)
    f = str(tmp_path / "a")
    m.opened(f, existed=False)
    m.folder_synced(tmp_path)
    m.wrote(f, 0, b"synced")
    m.synced(f)
    m.wrote(f, 6, b" and not")
    m.crash_point("now")
    m.crashes[-1].image(tmp_path / "img", random.Random(1), worst=True)
    assert (tmp_path / "img" / "a").read_bytes() == b"synced"


def test_unsynced_writes_survive_in_part_some_torn_at_sectors(tmp_path: Path) -> None:
    m = model(tmp_path)
    f = str(tmp_path / "a")
    m.opened(f, existed=False)
    m.folder_synced(tmp_path)
    m.wrote(f, 0, b"x" * 2048)
    m.crash_point("now")
    seen = set()
    for i in range(40):
        into = tmp_path / f"img{i}"
        m.crashes[-1].image(into, random.Random(i))
        data = (into / "a").read_bytes()
        sectors = tuple(data[s : s + 512] == b"x" * 512 for s in range(0, 2048, 512))
        seen.add(sectors)
    assert (True,) * 4 in seen  # all of it
    assert () in seen or (False,) * 4 in seen  # none of it
    assert any(any(s) and not all(s) for s in seen)  # torn


def test_a_new_name_is_durable_only_once_its_folder_is_synced(tmp_path: Path) -> None:
    m = model(tmp_path)
    f = str(tmp_path / "new")
    m.opened(f, existed=False)
    m.wrote(f, 0, b"data")
    m.synced(f)  # the file's own fsync does not make its name durable
    m.crash_point("before the folder sync")
    m.folder_synced(tmp_path)
    m.crash_point("after it")
    before, after = m.crashes[-2:]
    before.image(tmp_path / "before", random.Random(1), worst=True)
    after.image(tmp_path / "after", random.Random(1), worst=True)
    assert not (tmp_path / "before" / "new").exists()
    assert (tmp_path / "after" / "new").read_bytes() == b"data"


def test_a_deleted_name_comes_back_until_its_folder_is_synced(tmp_path: Path) -> None:
    (tmp_path / "journal").write_bytes(b"hot")
    m = model(tmp_path)
    f = str(tmp_path / "journal")
    m.opened(f, existed=True)  # there before the model: durable
    m.deleted(f, syncdir=False)
    m.crash_point("unlinked")
    m.deleted(f, syncdir=True)  # xDelete with syncdir: SQLite syncs the folder
    m.crash_point("unlinked and synced")
    lax, strict = m.crashes[-2:]
    lax.image(tmp_path / "lax", random.Random(1), worst=True)
    strict.image(tmp_path / "strict", random.Random(1), worst=True)
    assert (tmp_path / "lax" / "journal").read_bytes() == b"hot"
    assert not (tmp_path / "strict" / "journal").exists()
