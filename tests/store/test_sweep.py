"""The store sweep's row half on SQLite and PostgreSQL: messages in no folder are deleted with
their attachment rows and counted out of their threads; never one a transaction is giving an
entry. (Blobs: tests/e2e/test_store_sweep.py, against the running server.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from sqlalchemy import ColumnElement, Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.db import Database
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.folders import find_folder
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.mailboxes import FlagMode, copy_entries, expunge, update_flags
from mailboxkit.store.messages import NewMessage, StoredMessage, allocate_uids, insert_messages
from mailboxkit.store.mime import parse_message
from mailboxkit.store.sweep import (
    SweepPolicy,
    SweepReport,
    delete_messages_in_no_folder,
    sweep,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
POLICY = SweepPolicy(message_grace=timedelta(hours=1), blob_grace=timedelta(days=1))


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    store = LocalBlobStore(
        tmp_path / "blobs", signing_key=b"k" * 32, public_base_url="http://127.0.0.1"
    )
    yield store
    await store.close()


def raw(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["Subject"] = subject
    msg.set_content("body\n")
    msg.add_attachment(subject.encode(), maintype="text", subtype="plain", filename="a.txt")
    return msg.as_bytes(policy=SMTP)


async def add(
    db: Database, inbox: Inbox, messages: Sequence[tuple[str, datetime]]
) -> list[StoredMessage]:
    news = []
    for subject, received_at in messages:
        parsed = parse_message(raw(subject))
        news.append(
            NewMessage(
                inbox=inbox,
                parsed=parsed,
                raw_key=f"msg/{subject}.eml",
                size=1,
                received_at=received_at,
                attachment_keys=[f"att/{a.sha256}" for a in parsed.attachments],
            )
        )
    async with db.write() as conn:
        return await insert_messages(conn, news)


async def unfile(db: Database, *message_ids: str) -> None:
    """Leave messages in no folder, as two expunges at once can on PostgreSQL (see below)."""
    async with db.write() as conn:
        await conn.execute(delete(m.entries).where(m.entries.c.message_id.in_(message_ids)))


async def count(db: Database, table: Table, *where: ColumnElement[bool]) -> int:
    async with db.read() as conn:
        found = await conn.scalar(select(func.count()).select_from(table).where(*where))
    assert found is not None
    return found


async def test_messages_in_no_folder_go_with_their_attachment_rows_after_the_grace(
    db: Database, inbox: Inbox, blobs: LocalBlobStore
) -> None:
    old, recent, filed = await add(
        db, inbox, [("old", T0), ("recent", T0 + timedelta(hours=1)), ("filed", T0)]
    )
    await unfile(db, old.id, recent.id)
    now = T0 + timedelta(hours=1, minutes=30)  # "old" is past the hour of grace, "recent" not
    msg, att = m.messages.c, m.attachments.c

    assert await sweep(db, blobs, now=now, policy=POLICY, dry_run=True) == SweepReport(
        dry_run=True, messages=1
    )
    assert await count(db, m.messages) == 3

    assert await sweep(db, blobs, now=now, policy=POLICY) == SweepReport(messages=1)
    assert await count(db, m.messages, msg.id == old.id) == 0
    assert await count(db, m.attachments, att.message_id == old.id) == 0
    assert (
        await count(db, m.threads, m.threads.c.id == old.thread_id, m.threads.c.message_count == 0)
        == 1
    )
    for kept in (recent, filed):
        assert await count(db, m.messages, msg.id == kept.id) == 1
        assert await count(db, m.attachments, att.message_id == kept.id) == 1
    assert await sweep(db, blobs, now=now + timedelta(hours=1), policy=POLICY) == SweepReport(
        messages=1
    )
    assert await count(db, m.messages) == 1  # "filed" has its entry


async def test_two_expunges_at_once_of_the_last_two_copies(
    db: Database, inbox: Inbox, blobs: LocalBlobStore
) -> None:
    """The account's row (``store.quota``: an expunge locks it first) serializes them: on
    PostgreSQL the second waits for the first to commit, then sees its copy gone and deletes
    the message, as on SQLite, where there is one writer. Were they not serialized, each
    would see the other's entry and keep the message, leaving it to the sweep."""
    await add(db, inbox, [("twice", T0)])
    async with db.write() as conn:
        folder = await find_folder(conn, inbox.id, "INBOX")
        archive = await find_folder(conn, inbox.id, "Archive")
        assert folder is not None and archive is not None
        await copy_entries(conn, source_folder_id=folder.id, uids=[1], target_folder_id=archive.id)
        for folder_id in (folder.id, archive.id):
            await update_flags(
                conn, folder_id=folder_id, uids=[1], mode=FlagMode.ADD, flags=[SystemFlag.DELETED]
            )
    if db.is_sqlite:
        for folder_id in (folder.id, archive.id):
            async with db.write() as conn:
                await expunge(conn, folder_id=folder_id)
        assert await count(db, m.messages) == 0
        return

    async def expunge_archive() -> tuple[int, ...]:
        async with db.engine.begin() as second:
            return (await expunge(second, folder_id=archive.id)).uids

    async with db.engine.begin() as first:
        assert (await expunge(first, folder_id=folder.id)).uids == (1,)
        expunging = asyncio.create_task(expunge_archive())
        async with asyncio.timeout(30):
            while not await _lock_waits(db) and not expunging.done():
                await asyncio.sleep(0.01)  # polls the server's own lock table
        assert not expunging.done()
    assert await expunging == (1,)
    assert await count(db, m.entries) == 0
    assert await count(db, m.messages) == 0
    later = T0 + timedelta(hours=2)
    assert await sweep(db, blobs, now=later, policy=POLICY) == SweepReport()


async def _lock_waits(db: Database) -> int:
    async with db.read() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(waiting or 0)


async def test_a_message_being_given_an_entry_is_never_deleted(db: Database, inbox: Inbox) -> None:
    """A transaction adds an entry to a message in no folder while the sweep deletes it: on
    PostgreSQL the sweep waits for it, then finds the entry and keeps the message (without the
    row lock, its DELETE would go ahead and take the new entry with it by cascade)."""
    [message] = await add(db, inbox, [("adopted", T0)])
    await unfile(db, message.id)

    async def give_entry(conn: AsyncConnection) -> None:
        folder_id, uid, modseq = await allocate_uids(conn, inbox.id, "INBOX")
        await conn.execute(
            insert(m.entries).values(
                folder_id=folder_id,
                message_id=message.id,
                uid=uid,
                modseq=modseq,
                internal_date=T0,
                keywords=[],
            )
        )

    if db.is_sqlite:  # one writer: the two cannot overlap
        async with db.write() as conn:
            await give_entry(conn)
    else:
        async with db.engine.begin() as adding:
            await give_entry(adding)

            async def delete_it() -> int:
                async with db.write() as conn:
                    return await delete_messages_in_no_folder(conn, [message.id])

            deleting = asyncio.create_task(delete_it())
            async with asyncio.timeout(30):
                while not await _lock_waits(db) and not deleting.done():
                    await asyncio.sleep(0.01)  # polls the server's own lock table
            assert not deleting.done()
        assert await deleting == 0
    async with db.write() as conn:
        assert await delete_messages_in_no_folder(conn, [message.id]) == 0
    assert await count(db, m.messages, m.messages.c.id == message.id) == 1
    assert await count(db, m.entries, m.entries.c.message_id == message.id) == 1
