"""Every writable open syncs the folder its file lives in: the names of a new database, of
the journal SQLite switches it to WAL with, and of its WAL are durable only then
(tests/resilience/test_power_loss.py shows what a power cut does without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine.sqlite
from engine.sqlite import DbConfig, open_connection


def test_a_writable_open_syncs_its_folder_once_the_wal_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, bool]] = []
    monkeypatch.setattr(
        engine.sqlite, "sync_folder", lambda f: seen.append((f, (f / "n.db-wal").exists()))
    )
    open_connection(DbConfig(tmp_path / "n.db")).close()
    assert seen == [(tmp_path.resolve(), True)]
    open_connection(DbConfig(tmp_path / "n.db", readonly=True)).close()
    assert len(seen) == 1  # a reader creates no name that matters


def test_the_folder_synced_is_the_one_the_file_really_lives_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite follows a symlink and makes its journal and WAL beside the real file.
    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    (real / "s.db").touch()
    (links / "s.db").symlink_to(real / "s.db")
    synced: list[Path] = []
    monkeypatch.setattr(engine.sqlite, "sync_folder", synced.append)
    conn = open_connection(DbConfig(links / "s.db"))
    try:
        assert (real / "s.db-wal").exists()
    finally:
        conn.close()
    assert synced == [real.resolve()]
