"""Migrations: an older release run again on a database a newer one migrated (a rollback)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailboxkit.store.migrate import MIGRATIONS, upgrade


def revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (found,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert isinstance(found, str)
    return found


def test_a_database_ahead_of_this_release_is_left_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mailboxkit.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    head = revision(path)
    assert (MIGRATIONS / "versions").is_dir() and head
    with sqlite3.connect(path) as conn:  # what a newer release's migration leaves behind
        conn.execute("ALTER TABLE messages ADD COLUMN added_later TEXT")
        conn.execute("UPDATE alembic_version SET version_num = '9001_from_a_newer_release'")
    upgrade(url)  # does not raise "Can't locate revision"
    assert revision(path) == "9001_from_a_newer_release"
    assert "event=migrate_skipped revision=9001_from_a_newer_release" in caplog.text
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (head,))
    caplog.clear()
    upgrade(url)
    assert revision(path) == head
    assert "migrate_skipped" not in caplog.text
