"""Power cuts, modelled (tests/support/faultvfs.py): a crash image is taken at every sync
and opened by fresh connections on the default VFS, as the machine would after the cut.
Whatever was acknowledged before the cut must be in every image."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

import engine.sqlite
from engine.sqlite import DbConfig, Writer
from tests.support.faultvfs import PowerModel, installed


@pytest.fixture
def observe_folder_syncs(monkeypatch: pytest.MonkeyPatch) -> list[PowerModel]:
    """Tell the models the folder syncs the engine does itself (engine.sqlite.sync_folder):
    they happen outside SQLite, where the VFS cannot see them."""
    models: list[PowerModel] = []
    real = getattr(engine.sqlite, "sync_folder", None)

    def sync_folder(folder: Path) -> None:
        if real is not None:
            real(folder)
        for model in models:
            model.folder_synced(folder)

    monkeypatch.setattr(engine.sqlite, "sync_folder", sync_folder, raising=False)
    return models


def keys_in(path: Path) -> set[str]:
    """The keys an image holds, read as the next boot would; integrity checked first."""
    if not path.exists():
        return set()
    conn = apsw.Connection(str(path), vfs="unix")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = {str(n) for (n,) in conn.execute("SELECT name FROM sqlite_schema")}
        if "kv" not in tables:
            return set()
        return {str(k) for (k,) in conn.execute("SELECT k FROM kv")}
    finally:
        conn.close()


def _put(key: str) -> Callable[[apsw.Connection], str]:
    def unit(conn: apsw.Connection) -> str:
        conn.execute("INSERT INTO kv (k) VALUES (?)", (key,))
        return key

    return unit


def test_a_brand_new_database_survives_a_cut_at_every_sync(
    tmp_path: Path, observe_folder_syncs: list[PowerModel]
) -> None:
    # The new file, the rollback journal SQLite switches it to WAL with (created, then
    # deleted) and the WAL are names in the folder. Unless the folder is synced, a cut
    # can bring the journal back, and its rollback empties the database.
    data = tmp_path / "data"
    data.mkdir()
    acked: list[str] = []
    model = PowerModel(data, lambda: len(acked), seed=2)
    observe_folder_syncs.append(model)
    with installed(model):
        writer = Writer(DbConfig(data / "new.db"), ("CREATE TABLE kv (k TEXT PRIMARY KEY)",))
        try:
            for i in range(6):
                acked.append(writer.run_sync(_put(f"k{i}"), 5))
        finally:
            writer.close()
    assert len(model.crashes) > 6
    for n, crash in enumerate(model.crashes):
        for worst in (True, False):
            image = tmp_path / f"image-{n}-{worst}"
            crash.image(image, random.Random(n), worst=worst)
            lost = set(acked[: crash.acked]) - keys_in(image / "new.db")
            assert not lost, f"a cut {crash.label} loses {sorted(lost)}"
