"""The gap-safe outbox reader: never passes an event that may still commit, passes a rolled-back
seq once every transaction that could hold it has ended, and keeps seq order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store.accounts import create_account
from mailboxkit.store.db import Database
from mailboxkit.store.eventfeed import EventFeed, head
from mailboxkit.store.events import EventType, NewEvent, record_event, record_events

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


async def _event(conn: AsyncConnection, account: str, n: int) -> int:
    e = await record_event(
        conn, EventType.DOMAIN_VERIFIED, account_id=account, data={"n": n}, now=NOW
    )
    return e.seq


async def _account(db: Database) -> str:
    async with db.write() as conn:
        return await create_account(conn, name="feed", owner_email=None, now=NOW)


async def test_reads_in_order_and_moves_the_watermark(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        account = await _account(db)
        async with db.read() as conn:
            feed = EventFeed(await head(conn), is_sqlite=db.is_sqlite)
        async with db.write() as conn:
            seqs = [await _event(conn, account, n) for n in range(5)]
        async with db.read() as conn:
            events, more = await feed.read(conn, limit=3)
            assert [e.seq for e in events] == seqs[:3] and more
            events, more = await feed.read(conn, limit=3)
            assert [e.seq for e in events] == seqs[3:] and not more
        assert feed.cursor == seqs[-1]
    finally:
        await db.close()


async def test_a_batch_of_events_takes_seqs_in_its_order(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        account = await _account(db)
        async with db.write() as conn:
            before = await _event(conn, account, -1)
            batch = [NewEvent(EventType.DOMAIN_VERIFIED, account, {"n": n}, NOW) for n in range(40)]
            recorded = await record_events(conn, batch)
        assert [e.payload["data"]["n"] for e in recorded] == list(range(40))
        assert [e.seq for e in recorded] == sorted({e.seq for e in recorded})
        assert recorded[0].seq > before
        async with db.read() as conn:
            feed = EventFeed(before, is_sqlite=db.is_sqlite)
            stored, _ = await feed.read(conn, limit=100)
        assert [(e.seq, e.id, e.payload["data"]["n"]) for e in stored] == [
            (e.seq, e.id, n) for n, e in enumerate(recorded)
        ]
    finally:
        await db.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_waits_for_an_earlier_seq_still_committing(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        account = await _account(db)
        async with db.read() as conn:
            feed = EventFeed(await head(conn), is_sqlite=False, grace=0)
        slow = await db.engine.connect()
        slow_tx = await slow.begin()
        early = await _event(slow, account, 1)  # seq taken, not committed
        async with db.write() as conn:
            late = await _event(conn, account, 2)
        assert late > early
        async with db.read() as conn:
            assert await feed.read(conn) == ([], False)
            assert feed.held
            assert await feed.read(conn) == ([], False)  # its transaction is still running
        await slow_tx.commit()
        await slow.close()
        async with db.read() as conn:
            events, _ = await feed.read(conn)
        assert [e.seq for e in events] == [early, late]
        assert not feed.held
    finally:
        await db.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_passes_a_rolled_back_seq(database_url: str) -> None:
    db = Database.open(database_url)
    ticks = iter(range(100))
    try:
        account = await _account(db)
        async with db.read() as conn:
            feed = EventFeed(
                await head(conn), is_sqlite=False, grace=1, monotonic=lambda: next(ticks)
            )
        async with db.write() as conn:
            before = await _event(conn, account, 0)
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await _event(conn, account, 1)
                raise RuntimeError("roll back")
        async with db.write() as conn:
            after = await _event(conn, account, 2)
        async with db.read() as conn:
            first, _ = await feed.read(conn)
            assert [e.seq for e in first] == [before]  # held at the gap
            rest, _ = await feed.read(conn)
        assert [e.seq for e in rest] == [after]
        assert feed.cursor == after
    finally:
        await db.close()
