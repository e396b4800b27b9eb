"""Migrations: an older release run again on a database a newer one migrated (a rollback)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from mailboxkit.store.accounts import create_account, create_inbox
from mailboxkit.store.db import Database
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.migrate import MIGRATIONS, upgrade
from mailboxkit.store.mime import parse_message


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


async def test_large_text_is_compressed_with_lz4_on_postgresql(postgres_database: str) -> None:
    conn = await asyncpg.connect(postgres_database)
    try:
        if not await conn.fetchval(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ):
            pytest.skip("this PostgreSQL server has no lz4")
        now = datetime.now(UTC)
        db = Database.open(postgres_database.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with db.write() as write:
                account = await create_account(write, name="z", owner_email=None, now=now)
                inbox = await create_inbox(
                    write, account_id=account, address=f"lz4-{now.timestamp()}@x.test", now=now
                )
                words = " ".join(f"word{n % 997}" for n in range(20_000))  # compressible
                raw = f"Subject: big\r\n\r\n{words}\r\n".encode()
                [stored] = await insert_messages(
                    write,
                    [NewMessage(inbox, parse_message(raw), "msg/lz4.eml", len(raw), now, [])],
                )
        finally:
            await db.close()
        methods = await conn.fetchrow(
            "SELECT pg_column_compression(m.text) AS text,"
            " pg_column_compression(m.extracted_text) AS extracted,"
            " pg_column_compression(e.payload) AS payload"
            " FROM messages m JOIN events e ON e.message_id = m.id WHERE m.id = $1",
            stored.id,
        )
        assert (methods["text"], methods["extracted"], methods["payload"]) == ("lz4",) * 3
    finally:
        await conn.close()
