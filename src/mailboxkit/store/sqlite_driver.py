"""An asyncio SQLite driver that costs one thread hop per statement.

SQLAlchemy's asyncio SQLite dialect drives aiosqlite, which runs every call of the DB-API on the
connection's thread: opening a cursor, executing, fetching and closing it are four round trips
between the event loop and that thread, about half a millisecond of CPU for ``SELECT 1`` (the
query itself takes microseconds). A message delivery runs a dozen statements and a listing page
two, so those hops were most of what the store cost.

This module gives the same dialect (through ``create_async_engine(async_creator=...)``) a
connection with aiosqlite's interface whose cursor does its work in one hop: ``execute`` runs the
statement and, when it returns rows, fetches them all on the thread; ``fetch*`` then read the
kept rows and ``close`` has nothing left to do. That is what the dialect did anyway (it buffers
every result), so nothing changes but the cost. The ``BEGIN`` SQLAlchemy asks for is sent with
the transaction's first statement (:meth:`Connection.defer_begin`); commit, rollback and close
are one hop each.

:func:`run_on_thread` goes further for a block of statements: it runs the whole block (a
coroutine that awaits nothing but the connection) on the connection's thread, where each
statement runs at once instead of waiting for its turn on a busy event loop. Under load a
delivery's dozen statements took 16 ms that way, for 4 ms of work.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from queue import SimpleQueue
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
_Job = tuple[asyncio.Future[Any] | None, Callable[[], Any]]
_STOP = object()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the statement ran anyway
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _work(jobs: SimpleQueue[_Job]) -> None:
    while True:
        future, function = jobs.get()
        try:
            result, ok = function(), True
        except BaseException as error:
            result, ok = error, False
        if future is not None:
            future.get_loop().call_soon_threadsafe(_settle, future, ok, result)
        if result is _STOP:
            return


class Cursor:
    """A cursor whose results are fetched on the connection's thread as it executes."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def _run(self, call: Callable[[sqlite3.Cursor], Any]) -> Callable[[], None]:
        def job() -> None:
            self._connection._begin_if_deferred()
            cursor = self._connection._conn.cursor()
            try:
                call(cursor)
                rows = cursor.fetchall() if cursor.description else []
                self.description, self.rowcount = cursor.description, cursor.rowcount
                self.lastrowid = cursor.lastrowid
                self._rows = deque(rows)
            finally:
                cursor.close()

        return job

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        await self._connection.call(self._run(lambda c: c.execute(sql, parameters)))
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> Cursor:
        await self._connection.call(self._run(lambda c: c.executemany(sql, parameters)))
        return self

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class Connection:
    """A ``sqlite3`` connection living on its own thread, with aiosqlite's interface."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        # SQLAlchemy's adapter reads these names of aiosqlite's connection: ``_connection`` (the
        # sqlite3 connection or None), ``_conn`` (the same, or an error) and ``_tx`` (the jobs).
        self._connection: sqlite3.Connection | None = None
        self._tx: SimpleQueue[_Job] = SimpleQueue()
        self._thread = threading.Thread(target=_work, args=(self._tx,), daemon=True)
        self._deferred_begin: str | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    async def call(self, function: Callable[[], T]) -> T:
        if threading.get_ident() == self._thread.ident:  # in a block run_on_thread runs
            return function()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._tx.put_nowait((future, function))
        return await future

    async def open(self) -> Connection:
        self._thread.start()

        def connect() -> None:
            self._connection = self._connect()

        await self.call(connect)
        return self

    def cursor(self) -> Cursor:
        return Cursor(self)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def defer_begin(self, statement: str) -> None:
        """Open the transaction with ``statement`` (``BEGIN``, ``BEGIN IMMEDIATE``) in the same
        hop as its first statement."""
        self._deferred_begin = statement

    def _begin_if_deferred(self) -> None:
        statement, self._deferred_begin = self._deferred_begin, None
        if statement is not None:
            self._conn.execute(statement)

    def _end(self, end: Callable[[], None]) -> Callable[[], None]:
        # Runs on the thread, after every job sent before it: a statement still queued when its
        # caller was cancelled still opens its transaction first, and this then ends it.
        def job() -> None:
            self._deferred_begin = None
            end()

        return job

    async def commit(self) -> None:
        await self.call(self._end(self._conn.commit))

    async def rollback(self) -> None:
        await self.call(self._end(self._conn.rollback))

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        await self.call(lambda: self._conn.create_function(*args, **kwargs))

    async def close(self) -> None:
        if self._connection is None or not self._thread.is_alive():
            return
        await self.call(self._close)

    def _close(self) -> object:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return _STOP

    def stop(self) -> None:
        """Close without waiting (SQLAlchemy's terminate)."""
        if self._thread.is_alive():
            self._tx.put_nowait((None, self._close))


def _run_to_end(block: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, without an event loop."""
    try:
        waited = block.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    block.close()
    raise RuntimeError(f"a block run on the SQLite thread waited on {waited!r}")


async def run_on_thread(
    conn: AsyncConnection, block: Callable[[AsyncConnection], Coroutine[Any, Any, T]]
) -> T:
    """``await block(conn)``, on the connection's own thread when it is one of this module's.

    ``block`` may await ``conn`` (its statements, their results) and nothing else: there is no
    event loop on that thread; awaiting anything else raises ``RuntimeError``.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, Connection):
        return await block(conn)
    return await driver.call(lambda: _run_to_end(block(conn)))


def connector(args: Sequence[Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine``: ``sqlite3.connect(*args, **kwargs)``
    on a connection thread of this module."""

    async def create() -> Connection:
        return await Connection(lambda: sqlite3.connect(*args, **kwargs)).open()

    return create
