"""Change notices between server processes that share one PostgreSQL database.

Every process rings its own IMAP sessions through ``mailbox_changes.MailboxChanges``; this
module carries those notices to the other processes with PostgreSQL LISTEN/NOTIFY, so an
IDLE session sees a change committed by any process at once.

Implementation notes:

- One dedicated asyncpg connection, outside the SQLAlchemy pool, both LISTENs on
  :data:`CHANNEL` and sends. The payload is the inbox id (``*``: every inbox, after a
  process lost track of its events).
- A notice is sent after the transaction that caused it committed: callers notify only
  after commit (``MailboxChanges.notify``), and :meth:`ChangeNotifier.publish` only queues.
  Notices queued while a send is in flight go out together in one statement; PostgreSQL
  drops duplicates within it.
- A notice received from another process rings this process's watches only
  (``MailboxChanges.ring``), never sent on. Our own come back to us; they are known by the
  sending backend's pid, which is our connection's, and dropped.
- A lost connection (termination, failed send or keepalive, or any error of the driver, such
  as an operation caught in flight by the termination) is reopened with exponential backoff,
  from :data:`FIRST_RETRY` up to ``retry_max`` seconds. Notices from other processes may have
  gone by meanwhile, so every local watch is rung after each connect; our own unsent notices
  are kept and sent after reconnecting.
- A silently dead connection (no FIN, no RST) is found by a ``SELECT 1`` after
  ``keepalive`` seconds without traffic.
- LISTEN needs a session of its own: a pooler in transaction mode (PgBouncer) between us and
  PostgreSQL would lose it.
- SQLite serves one process: nothing to carry, the notifier is not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from mailboxkit.store.mailbox_changes import MailboxChanges
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)

CHANNEL = "mailboxkit_changes"
"""The LISTEN/NOTIFY channel of mailbox change notices."""

APPLICATION_NAME = "mailboxkit-notify"
"""The connection's ``application_name``, as ``pg_stat_activity`` shows it."""

EVERY_INBOX = "*"
"""Payload of a notice for every inbox."""

FIRST_RETRY = 0.1
"""Seconds before the first reconnect attempt; each failure doubles it up to ``retry_max``."""

_SEND = "SELECT pg_notify($1, inbox_id) FROM unnest($2::text[]) AS inbox_id"


class ConnectionLost(Exception):
    """The listen connection was closed under us."""


_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")
"""URL query arguments SQLAlchemy's asyncpg dialect takes; asyncpg would send them to the
server as settings."""


def listen_dsn(sqlalchemy_url: str) -> str:
    """The asyncpg DSN of a ``postgresql+asyncpg://`` SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    url = url.difference_update_query(_DIALECT_ONLY)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    retry_max: float
    """Most seconds between reconnect attempts."""
    keepalive: float
    """Seconds without traffic before the connection is checked (and its timeout)."""


class ChangeNotifier:
    """Carries change notices to and from the other server processes (see module notes)."""

    def __init__(self, dsn: str, changes: MailboxChanges, config: NotifyConfig) -> None:
        self._dsn = dsn
        self._changes = changes
        self._config = config
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._pid: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Relay ``changes``' notices; wait up to ``keepalive`` seconds for the connection
        (a failure is logged and retried in the background)."""
        self._changes.relay = self.publish
        self._task = asyncio.create_task(self._run(), name="change-notifier")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._config.keepalive)

    async def stop(self) -> None:
        if self._changes.relay == self.publish:
            self._changes.relay = None
        await stop_tasks(self._task)
        self._task = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, inbox_id: str | None) -> None:
        """Queue a notice for the other processes (None: every inbox)."""
        self._pending.add(EVERY_INBOX if inbox_id is None else inbox_id)
        self._wake.set()

    def _received(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._pid:
            return
        if payload == EVERY_INBOX:
            self._changes.ring_all()
        else:
            self._changes.ring(payload)

    async def _run(self) -> None:
        delay = FIRST_RETRY
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._config.keepalive,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            except Exception as error:  # whatever it is, the relay must go on: retry
                log.warning(
                    "event=change_notify_connect_failed error=%s retry_in=%.1f",
                    type(error).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._config.retry_max)
                continue
            delay = FIRST_RETRY
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                conn.terminate()  # a close could meet an operation in flight
                raise
            except Exception as error:  # lost, or the driver's state broke with it: start over
                log.warning("event=change_notify_lost error=%s", type(error).__name__)
                conn.terminate()
            finally:
                self._connected.clear()
                self._pid = None
            await asyncio.sleep(FIRST_RETRY)

    async def _serve(self, conn: Any) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._received)
        self._pid = conn.get_server_pid()
        self._connected.set()
        log.info("event=change_notify_listening channel=%s", CHANNEL)
        self._changes.ring_all()  # notices may have gone by while we were not listening
        while True:
            woken = asyncio.ensure_future(self._wake.wait())
            closed = asyncio.ensure_future(lost.wait())
            try:
                done, _ = await asyncio.wait(
                    {woken, closed},
                    timeout=self._config.keepalive,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                woken.cancel()
                closed.cancel()
            if lost.is_set() or conn.is_closed():
                raise ConnectionLost
            self._wake.clear()
            if self._pending:
                await self._send(conn)
            elif not done:
                await conn.fetchval("SELECT 1", timeout=self._config.keepalive)

    async def _send(self, conn: Any) -> None:
        inbox_ids, self._pending = self._pending, set()
        try:
            await conn.execute(_SEND, CHANNEL, sorted(inbox_ids), timeout=self._config.keepalive)
        except BaseException:
            self._pending |= inbox_ids
            self._wake.set()
            raise
