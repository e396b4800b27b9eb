"""Change notices between processes over PostgreSQL LISTEN/NOTIFY (``store/notify.py``): two
notifiers on one database stand for two server processes. Waits are on the watches' events,
with a timeout only as a failure bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from mailboxkit.store.mailbox_changes import ChangeWatch, MailboxChanges
from mailboxkit.store.notify import (
    APPLICATION_NAME,
    ChangeNotifier,
    NotifyConfig,
    listen_dsn,
)

BOUND = 5.0
"""Seconds after which a notice that has not arrived is a failure."""


async def rung(watch: ChangeWatch) -> None:
    await asyncio.wait_for(watch.rung.wait(), BOUND)
    watch.rung.clear()


@pytest.fixture
async def pair(postgres_database: str) -> AsyncIterator[tuple[MailboxChanges, MailboxChanges]]:
    """Two processes' change hubs, each relayed by its own notifier."""
    config = NotifyConfig(retry_max=1, keepalive=5)
    dsn = listen_dsn(postgres_database.replace("postgresql://", "postgresql+asyncpg://"))
    hubs = MailboxChanges(), MailboxChanges()
    notifiers = [ChangeNotifier(dsn, hub, config) for hub in hubs]
    for notifier in notifiers:
        await notifier.start()
        assert notifier.connected
    yield hubs
    for notifier in notifiers:
        await notifier.stop()
    assert all(hub.relay is None for hub in hubs)


def test_listen_dsn_is_the_plain_url() -> None:
    url = "postgresql+asyncpg://user:p%40ss@db.internal:5433/mbk?ssl=require"
    assert listen_dsn(url + "&prepared_statement_cache_size=0") == listen_dsn(url)
    assert listen_dsn(url) == "postgresql://user:p%40ss@db.internal:5433/mbk?ssl=require"


async def test_a_notice_rings_the_other_process_and_does_not_echo(
    pair: tuple[MailboxChanges, MailboxChanges],
) -> None:
    a, b = pair
    a_one, a_two = a.watch("one"), a.watch("two")
    b_one, b_two = b.watch("one"), b.watch("two")
    a.notify("one")
    assert a_one.rung.is_set()  # at once, in its own process
    a_one.rung.clear()
    await rung(b_one)
    assert not b_two.rung.is_set()
    # B's notice is delivered after A's own came back (commit order): had A taken its
    # own notice for another process's, a_one would be rung again by now.
    b.notify("two")
    await rung(a_two)
    assert not a_one.rung.is_set()
    assert not b_one.rung.is_set()  # B does not send A's notice on


async def test_every_inbox(pair: tuple[MailboxChanges, MailboxChanges]) -> None:
    a, b = pair
    watches = [b.watch("one"), b.watch("two")]
    a.notify_all()
    for watch in watches:
        await rung(watch)


async def test_notices_missed_while_reconnecting_ring_every_watch(
    pair: tuple[MailboxChanges, MailboxChanges], postgres_database: str
) -> None:
    a, b = pair
    watch = b.watch("one")
    conn = await asyncpg.connect(postgres_database)
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 "
            "AND datname = current_database()",
            APPLICATION_NAME,
        )
    finally:
        await conn.close()
    assert len(killed) == 2
    a.notify("one")  # sent once A is back; B rings every watch once it is back
    await rung(watch)
    # B rang every watch when it was back, before it could hear anything: a new watch
    # rings only for a notice, which A sends as it is back too.
    later = b.watch("two")
    a.notify("two")
    await rung(later)
