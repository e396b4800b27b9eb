"""The SQLite driver under SQLAlchemy: results, errors, transactions and cancellation behave as
with any DB-API driver (the rest of the store's tests run on it too)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from queue import SimpleQueue

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store.db import Database
from mailboxkit.store.sqlite_driver import Connection, run_on_thread


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database.open(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with database.write() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield database
    await database.close()


async def test_rows_rowcount_and_lastrowid(db: Database) -> None:
    async with db.write() as conn:
        many = await conn.execute(
            text("INSERT INTO t (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}]
        )
        assert many.rowcount == 2
        one = await conn.execute(text("INSERT INTO t (name) VALUES ('c')"))
        assert one.lastrowid == 3
    async with db.read() as conn:
        result = await conn.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert [tuple(r) for r in result] == [(1, "a"), (2, "b"), (3, "c")]
        assert (await conn.execute(text("UPDATE t SET name = name"))).rowcount == 3


async def test_constraint_error_is_sqlalchemys_and_the_transaction_is_rolled_back(
    db: Database,
) -> None:
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('x')"))
            await conn.execute(text("INSERT INTO t (name) VALUES ('x')"))
    with pytest.raises(OperationalError, match="no such table"):
        async with db.read() as conn:
            await conn.execute(text("SELECT * FROM missing"))
    async with db.read() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM t"))) == 0


async def test_a_cancelled_statement_leaves_the_database_usable(db: Database) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(value: int) -> int:  # runs on the connection's thread, inside the statement
        started.set()
        release.wait(10)
        return value

    async def cancelled_write() -> None:
        async with db.write() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection._conn.create_function("slow", 1, slow)  # type: ignore[union-attr]
            await conn.execute(text("INSERT INTO t (name) VALUES ('lost')"))
            await conn.execute(text("SELECT slow(1)"))

    task = asyncio.create_task(cancelled_write())
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.write() as conn:  # the one writer connection is free and works
        await conn.execute(text("INSERT INTO t (name) VALUES ('after')"))
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT name FROM t"))).scalars().all() == ["after"]


async def test_each_connection_has_its_own_thread_and_close_ends_it(tmp_path: Path) -> None:
    database = Database.open(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    async with database.read() as a, database.engine.connect() as b:
        assert await a.scalar(text("SELECT 1")) == await b.scalar(text("SELECT 1"))
        threads = [
            (await conn.get_raw_connection()).driver_connection._thread  # type: ignore[union-attr]
            for conn in (a, b)
        ]
        assert threads[0] is not threads[1] and all(t.is_alive() for t in threads)
    await database.close()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


async def test_a_block_runs_whole_on_the_connections_thread(db: Database) -> None:
    async def block(conn: AsyncConnection) -> tuple[int, list[str]]:
        await conn.execute(text("INSERT INTO t (name) VALUES ('a'), ('b')"))
        names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
        return threading.get_ident(), list(names)

    async with db.write() as conn:
        thread, names = await run_on_thread(conn, block)
        raw = await conn.get_raw_connection()
        assert thread == raw.driver_connection._thread.ident  # type: ignore[union-attr]
    assert thread != threading.get_ident()
    assert names == ["a", "b"]
    async with db.read() as conn:  # committed
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 2


async def test_a_block_that_waits_on_anything_else_fails_and_is_rolled_back(db: Database) -> None:
    async def block(conn: AsyncConnection) -> None:
        await conn.execute(text("INSERT INTO t (name) VALUES ('lost')"))
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="waited on"):
        async with db.write() as conn:
            await run_on_thread(conn, block)
    async with db.read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 0


async def test_errors_of_a_block_reach_the_caller(db: Database) -> None:
    async def block(conn: AsyncConnection) -> None:
        await conn.execute(text("INSERT INTO t (name) VALUES ('x'), ('x')"))

    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await run_on_thread(conn, block)
    async with db.write() as conn:  # the writer is usable afterwards
        await run_on_thread(conn, lambda c: c.execute(text("INSERT INTO t (name) VALUES ('y')")))
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT name FROM t"))).scalars().all() == ["y"]


async def test_a_read_sees_one_snapshot_from_its_first_statement(db: Database) -> None:
    async with db.read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 0
        async with db.write() as writer:
            await writer.execute(text("INSERT INTO t (name) VALUES ('later')"))
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 0
    async with db.read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 1


async def test_a_write_holds_the_write_lock_from_its_first_statement(
    db: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "d.db", timeout=0, isolation_level=None)
    try:
        async with db.write() as conn:
            other.execute("BEGIN IMMEDIATE")  # no statement yet: nothing is held
            other.execute("ROLLBACK")
            await conn.execute(text("SELECT count(*) FROM t"))  # a read, in BEGIN IMMEDIATE
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await conn.execute(text("INSERT INTO t (name) VALUES ('kept')"))
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        assert other.execute("SELECT name FROM t").fetchall() == [("kept",)]
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_transactions_that_run_nothing_leave_the_connections_usable(db: Database) -> None:
    for _ in range(3):
        async with db.write():
            pass
        async with db.read():
            pass
    with pytest.raises(KeyError):
        async with db.write():
            raise KeyError("before any statement")
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES ('z')"))
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT name FROM t"))).scalars().all() == ["z"]


async def test_a_first_statement_cancelled_while_queued_is_rolled_back_not_committed(
    db: Database,
) -> None:
    # The connection's thread is held until the INSERT (which carries the BEGIN) is queued
    # behind it; then the writer is cancelled, and the thread let go once what SQLAlchemy does
    # about it (it closes the connection) is queued too. The INSERT still runs, inside the
    # transaction its BEGIN opens, and is never committed.
    loop = asyncio.get_running_loop()
    holding = threading.Event()
    seen: list[int] = []  # how many jobs waited behind hold() at each step

    def hold(jobs: SimpleQueue[object], task: asyncio.Task[None]) -> None:
        holding.set()
        for queued in (1, 2):
            deadline = time.monotonic() + 10
            while jobs.qsize() < queued and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append(jobs.qsize())
            if queued == 1:
                loop.call_soon_threadsafe(task.cancel)

    async def write() -> None:
        async with db.write() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert isinstance(driver, Connection)
            held = asyncio.ensure_future(driver.call(lambda: hold(driver._tx, task)))
            await asyncio.to_thread(holding.wait, 10)
            try:
                await conn.execute(text("INSERT INTO t (name) VALUES ('lost')"))
            finally:
                held.cancel()

    task = asyncio.create_task(write())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [1, 2]  # the INSERT was queued when cancelled, then the close behind it
    async with db.read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM t")) == 0
