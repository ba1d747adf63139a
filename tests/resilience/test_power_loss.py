"""Power cuts, modelled (tests/support/faultvfs.py): a crash image is taken at every sync,
at some writes in between and at the end, and opened by fresh connections on the default
VFS, as the machine would after the cut. Whatever was acknowledged before the cut must be
in every image, recovery must finish every saga, and the contract's invariants must hold
(tests/support/ledger_world.py). Under synchronous=NORMAL the check must find losses."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import engine.sqlite
from engine.sqlite import DbConfig, Synchronous, Writer
from tests.support.faultvfs import PowerModel, installed
from tests.support.ledger_world import Recorder, Verdict, check, mixed_orders, opened, run


@pytest.fixture
def observe_folder_syncs(monkeypatch: pytest.MonkeyPatch) -> list[PowerModel]:
    """Tell the models the folder syncs the engine does itself (engine.sqlite.sync_folder):
    they happen outside SQLite, where the VFS cannot see them."""
    models: list[PowerModel] = []
    real = engine.sqlite.sync_folder

    def sync_folder(folder: Path) -> None:
        real(folder)
        for model in models:
            model.folder_synced(folder)

    monkeypatch.setattr(engine.sqlite, "sync_folder", sync_folder)
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


async def cut_everywhere(
    data: Path, models: list[PowerModel], sync: Synchronous, seed: int
) -> tuple[PowerModel, Recorder]:
    """The order saga over the log and the three ledgers, new files in `data`, with a crash
    point at every sync, at some writes, and at the end."""
    recorder = Recorder()
    model = PowerModel(data, recorder.count, seed=seed, random_points=0.01)
    models.append(model)
    with installed(model):
        async with opened(data, sync, recorder) as world:
            await run(world, [mixed_orders(3, "a"), mixed_orders(3, "b")])
            model.crash_point("at the end")
    return model, recorder


async def check_images(
    model: PowerModel, recorder: Recorder, images: Path, *, every: int = 1
) -> Verdict:
    """Every `every`-th crash image (and the last), each a third of the time the worst one
    (nothing unsynced kept), checked against what was acknowledged before its cut."""
    problems: list[str] = []
    recovered = 0
    for n, crash in enumerate(model.crashes):
        if n % every and n != len(model.crashes) - 1:
            continue
        image = images / f"cut-{n}"
        crash.image(image, random.Random(n), worst=n % 3 == 0)
        verdict = await check(image, recorder.acks[: crash.acked])
        problems += [f"a cut {crash.label}: {p}" for p in verdict.problems]
        recovered += verdict.recovered
        shutil.rmtree(image)
    return Verdict(problems, recovered)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the images go: a tmpfs when there is one (checking an image opens the four
    files, each open syncs its folder, and on a disk those syncs are most of the time)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "images"
        return
    folder = Path(tempfile.mkdtemp(prefix="power-loss-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_every_acknowledgement_survives_a_cut_anywhere(
    tmp_path: Path, scratch: Path, observe_folder_syncs: list[PowerModel]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    model, recorder = await cut_everywhere(data, observe_folder_syncs, Synchronous.FULL, seed=3)
    assert model.syncs > 30 and len(model.crashes) > 2 * model.syncs
    assert len(recorder.acks) > 40
    verdict = await check_images(model, recorder, scratch)
    assert not verdict.problems, verdict.problems[:10]
    assert verdict.recovered > 20, verdict  # recovery had work to do: cuts came mid-saga


async def test_the_check_finds_the_losses_of_synchronous_normal(
    tmp_path: Path, scratch: Path, observe_folder_syncs: list[PowerModel]
) -> None:
    # NORMAL syncs the WAL only at checkpoints: a commit is acknowledged before it is
    # durable, so a cut loses acknowledged sagas. If the check did not see it, the test
    # above would prove nothing.
    data = tmp_path / "data"
    data.mkdir()
    model, recorder = await cut_everywhere(data, observe_folder_syncs, Synchronous.NORMAL, seed=3)
    verdict = await check_images(model, recorder, scratch, every=4)
    lost = [p for p in verdict.problems if "was acknowledged and is gone" in p]
    assert lost, verdict.problems[:10]
