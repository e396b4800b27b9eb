"""``unavailable``: which database errors mean "try again later" (the surfaces answer SMTP 451,
IMAP ``NO [UNAVAILABLE]``, HTTP 503) and which are bugs to report, raised by the real drivers.
The end-to-end view of an outage is tests/e2e/test_outages.py."""

from __future__ import annotations

import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, TimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

from mailboxkit.store import models as m
from mailboxkit.store.db import Database, storage_full, unavailable

from harness import free_port


async def test_no_free_pooled_connection_in_time(database_url: str) -> None:
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(TimeoutError) as raised:
                await engine.connect()
        assert unavailable(raised.value)
    finally:
        await engine.dispose()


async def test_wrong_sql_and_broken_constraints_are_not_unavailability(
    database_url: str,
) -> None:
    db = Database.open(database_url)
    try:
        with pytest.raises((OperationalError, ProgrammingError)) as missing:
            async with db.read() as conn:
                await conn.execute(text("SELECT * FROM no_such_table"))
        assert not unavailable(missing.value)
        with pytest.raises(IntegrityError) as duplicate:
            async with db.write() as conn:
                row = {"id": "d1", "name": "d", "created_at": datetime.now(UTC)}
                await conn.execute(insert(m.accounts), [row, row])
        assert not unavailable(duplicate.value)
    finally:
        await db.close()


async def test_sqlite_file_locked_past_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with pytest.raises(OperationalError, match="locked") as locked:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert unavailable(locked.value)
    finally:
        await engine.dispose()
        holder.close()


async def test_postgresql_server_not_listening() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    try:
        with pytest.raises(OSError) as refused:
            await engine.connect()
        assert unavailable(refused.value)
    finally:
        await engine.dispose()


async def test_postgresql_connection_killed_under_a_transaction(postgres_database: str) -> None:
    url = postgres_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    db = Database.open(url)
    try:
        with pytest.raises(Exception) as killed:
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert unavailable(killed.value)
        async with db.read() as conn:  # the pool replaced the dead connection
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await db.close()


async def test_postgresql_server_that_never_answers() -> None:
    """A host cut off by the network: the connection is taken, nothing comes back."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody reads or answers
        port = silent.getsockname()[1]
        db = Database.open(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test", connect_timeout=0.5
        )
        try:
            with pytest.raises(ConnectionError) as silence:
                async with db.read() as conn:
                    await conn.execute(text("SELECT 1"))
            assert unavailable(silence.value)
        finally:
            await db.close()


def test_a_full_disk_is_storage_full_and_unavailability() -> None:
    with open("/dev/full", "wb", buffering=0) as full, pytest.raises(OSError) as raised:
        full.write(b"x")
    assert storage_full(raised.value)
    assert unavailable(raised.value)
    with pytest.raises(FileNotFoundError) as missing:
        open("/no/such/dir/file", "rb")  # noqa: SIM115 - the error is what is tested
    assert not storage_full(missing.value)
    assert not unavailable(missing.value)


async def test_sqlite_database_full(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'full.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x BLOB)"))
        with pytest.raises(OperationalError, match="full") as full:
            async with engine.begin() as conn:
                await conn.execute(text("PRAGMA max_page_count = 8"))
                for _ in range(16):
                    await conn.execute(text("INSERT INTO t VALUES (zeroblob(4000))"))
        assert storage_full(full.value)
        assert unavailable(full.value)
    finally:
        await engine.dispose()
