"""Read state and labels as listings and single messages show them: from every entry of a
message, in entry order, in the one query of the page (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.db import Database
from mailboxkit.store.listing import MessageFilter, get_message, list_messages
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.mime import parse_message

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def _store(db: Database, inbox: Inbox, count: int) -> list[str]:
    news = []
    for n in range(count):
        data = f"Subject: m{n}\r\nMessage-ID: <m{n}@x>\r\n\r\nbody\r\n".encode()
        news.append(
            NewMessage(
                inbox=inbox,
                parsed=parse_message(data),
                raw_key=f"msg/{n}.eml",
                size=len(data),
                received_at=T0 + timedelta(minutes=n),
                attachment_keys=[],
            )
        )
    async with db.write() as conn:
        return [s.id for s in await insert_messages(conn, news)]


async def _flags(db: Database, inbox: Inbox) -> dict[str, tuple[bool, list[str]]]:
    async with db.read() as conn:
        page, _ = await list_messages(conn, inbox.id, MessageFilter(), limit=10)
        for record in page:  # a single message says the same as the page
            single = await get_message(conn, inbox.id, record.id)
            assert single is not None and (single.read, single.labels) == (
                record.read,
                record.labels,
            )
    return {r.id: (r.read, r.labels) for r in page}


async def test_read_and_labels_come_from_every_entry_in_entry_order(
    db: Database, inbox: Inbox
) -> None:
    copied, plain, expunged = await _store(db, inbox, 3)
    async with db.write() as conn:
        archive = await conn.scalar(
            select(m.folders.c.id).where(
                m.folders.c.inbox_id == inbox.id, m.folders.c.name == "Archive"
            )
        )
        entries = m.entries.c
        await conn.execute(
            update(m.entries).where(entries.message_id == copied).values(keywords=["b", "a"])
        )
        await conn.execute(
            insert(m.entries).values(
                folder_id=archive,
                message_id=copied,
                uid=1,
                modseq=2,
                internal_date=T0,
                seen=True,
                keywords=["c", "a"],
            )
        )
        await conn.execute(update(m.entries).where(entries.message_id == plain).values(seen=True))
        await conn.execute(delete(m.entries).where(entries.message_id == expunged))
    assert await _flags(db, inbox) == {
        copied: (True, ["b", "a", "c"]),
        plain: (True, []),
        expunged: (False, []),
    }


async def test_a_page_of_many_messages_has_each_ones_own_flags(db: Database, inbox: Inbox) -> None:
    ids = await _store(db, inbox, 8)
    async with db.write() as conn:
        for n, message_id in enumerate(ids):
            await conn.execute(
                update(m.entries)
                .where(m.entries.c.message_id == message_id)
                .values(seen=n % 2 == 0, keywords=[f"k{n}"] if n % 3 == 0 else [])
            )
    flags = await _flags(db, inbox)
    assert flags == {
        message_id: (n % 2 == 0, [f"k{n}"] if n % 3 == 0 else [])
        for n, message_id in enumerate(ids)
    }
