"""Database engines: SQLite (embedded default) and PostgreSQL behind one small interface.

SQLite allows one writer at a time. Rather than let writers collide and retry, every write goes
through one dedicated connection (``Database.write``) that opens ``BEGIN IMMEDIATE``; readers use
a pool and WAL lets them run beside the writer. ``synchronous=FULL`` makes a commit durable
before it returns. PostgreSQL needs none of this: both methods use one pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, event, exc, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from mailboxkit.store import sqlite_driver


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN (see _defer_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=10000",
    ):
        cursor.execute(pragma)
    cursor.close()


def _defer_begin(conn: Connection, statement: str) -> None:
    # SQLAlchemy says when a transaction begins; the driver sends the BEGIN with the first
    # statement, in the same hop to its thread (sqlite_driver.Connection.defer_begin).
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite_driver.Connection)
    driver.defer_begin(statement)


_SQLITE_FULL = 13
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, _SQLITE_FULL, 14})
"""SQLite's primary result codes BUSY, LOCKED, IOERR, FULL and CANTOPEN: the file, not the SQL."""
_POSTGRES_UNAVAILABLE = ("08", "53", "57")
"""SQLSTATE classes: connection exception, insufficient resources, operator intervention."""
_POSTGRES_DISK_FULL = "53100"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_full(error: BaseException | None) -> bool:
    """Whether ``error`` says the disk (or the disk quota) under the blob directory or the
    database is full: a condition that passes when an operator frees space, so the client
    should try again later (SMTP's 452 4.3.1, RFC 3463 "mail system full")."""
    if isinstance(error, OSError):
        return error.errno in _NO_SPACE
    if not isinstance(error, exc.DBAPIError):
        return False
    if getattr(error.orig, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    return getattr(error.orig, "sqlstate", None) == _POSTGRES_DISK_FULL


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot serve a transaction right now, so the
    client should try again later rather than hear of a server bug: no pooled connection
    free in time, a connection lost or refused (the server restarting, its connection
    limit reached), SQLite's file locked past the busy timeout or failing to read or write;
    also any ConnectionError, which is how the blob store says it is out of reach
    (``blobs.BlobStoreUnavailable``), and a full disk (``storage_full``).

    A DBAPI error raised outside any statement (``statement`` unset) came from connecting,
    committing or rolling back: connection trouble, whatever the driver calls it. SQL that is
    wrong (SQLite reports a missing table as an OperationalError too) is not unavailability.
    """
    if isinstance(error, exc.TimeoutError | ConnectionError) or storage_full(error):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated or error.statement is None:
        return True
    sqlite_code = getattr(error.orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return sqlstate.startswith(_POSTGRES_UNAVAILABLE)


def brief(error: BaseException) -> str:
    """The first line of an error's text, for a one-line log entry (SQLAlchemy's run on with
    the statement and a link)."""
    return str(error).partition("\n")[0][:200]


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """Log a failed operation: one warning line when the database is out of reach (expected
    in an outage, and repeated for every request meanwhile), else the error's traceback."""
    if unavailable(error):
        logger.warning(message + " error=%s", *args, brief(error))
    else:
        logger.error(message, *args, exc_info=error)


async def when_available(
    operation: Callable[[], Awaitable[object]],
    *,
    within: float,
    stopping: asyncio.Event,
    backoff: tuple[float, float] = (0.5, 30.0),
) -> bool:
    """Run ``operation`` again while it fails because the store is out of reach (it already
    failed once so), waiting ``backoff[0]`` seconds doubling to ``backoff[1]`` before each try,
    for up to ``within`` seconds. True once it succeeded; False when given up. ``stopping``
    set cuts the wait short: one more try at once, then give up. Other errors propagate."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    delay, longest = backoff
    while loop.time() + delay < give_up and not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stopping.wait()
        try:
            await operation()
        except Exception as error:
            if not unavailable(error):
                raise
            delay = min(delay * 2, longest)
        else:
            return True
    return False


SQLITE_READERS = 12
SQLITE_READERS_OVERFLOW = 8
"""SQLite's read connections kept open, and how many more may open for a while. A connection
past the kept ones is opened (a thread, the file, its pragmas) and closed for each use: with 4
kept, 10 concurrent API sends spent about a tenth of their CPU on that (``bench/outbound.py``,
7.1-7.6 against 7.8-8.7 ms a message). An idle one costs a thread and its page cache."""

CONNECT_TIMEOUT = 10.0
"""Seconds PostgreSQL has to answer a new connection (asyncpg's own default is 60)."""


def _connect_or_refuse(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    # A server that does not answer in time (a host cut off by the network) is out of reach
    # like one that refuses: a ConnectionError, not a bare TimeoutError, which the sessions
    # would take for their own idle timeouts.
    try:
        return dialect.connect(*cargs, **cparams)
    except TimeoutError as error:
        raise ConnectionError(f"no answer from the database in time: {error}") from error


def upsert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``table`` in the connection's dialect, which has
    ``on_conflict_do_nothing`` and ``on_conflict_do_update`` (PostgreSQL and SQLite both)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(table)


@dataclass(slots=True)
class Database:
    """The engines of one database, and whether it is SQLite."""

    engine: AsyncEngine
    writer: AsyncEngine
    is_sqlite: bool
    _write_lock: asyncio.Lock

    @classmethod
    def open(
        cls, url: str, *, echo: bool = False, connect_timeout: float = CONNECT_TIMEOUT
    ) -> Database:
        """``connect_timeout``: seconds PostgreSQL has to answer a new connection."""
        if url.startswith("sqlite"):
            parsed = make_url(url)  # the file and options, as the dialect reads them
            args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
            creator = sqlite_driver.connector(args, {**kwargs, "check_same_thread": False})
            engine = create_async_engine(
                url,
                echo=echo,
                pool_size=SQLITE_READERS,
                max_overflow=SQLITE_READERS_OVERFLOW,
                async_creator=creator,
            )
            writer = create_async_engine(
                url, echo=echo, pool_size=1, max_overflow=0, async_creator=creator
            )
            for eng, begin in ((engine, "BEGIN"), (writer, "BEGIN IMMEDIATE")):
                event.listen(eng.sync_engine, "connect", _sqlite_pragmas)
                event.listen(
                    eng.sync_engine,
                    "begin",
                    lambda conn, statement=begin: _defer_begin(conn, statement),
                )
            return cls(engine, writer, True, asyncio.Lock())
        engine = create_async_engine(
            url,
            echo=echo,
            pool_size=10,
            max_overflow=20,
            connect_args={"timeout": connect_timeout},
        )
        event.listen(engine.sync_engine, "do_connect", _connect_or_refuse)
        return cls(engine, engine, False, asyncio.Lock())

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that is rolled back at the end."""
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction committed (durably) when the block ends without an exception."""
        if self.is_sqlite:
            async with self._write_lock, self.writer.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    async def close(self) -> None:
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()
