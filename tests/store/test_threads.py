"""Threading on SQLite and PostgreSQL: identification headers first, subject only as a fallback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, create_account, create_inbox
from mailboxkit.store.db import Database
from mailboxkit.store.messages import NewMessage, StoredMessage, insert_message, insert_messages
from mailboxkit.store.mime import parse_message

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def raw(headers: dict[str, str], body: str = "text\r\n") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{lines}\r\n{body}".encode()


async def deliver(db: Database, inbox: Inbox, data: bytes, minutes: int) -> StoredMessage:
    parsed = parse_message(data)
    new = NewMessage(
        inbox=inbox,
        parsed=parsed,
        raw_key=f"msg/{minutes}.eml",
        size=len(data),
        received_at=T0 + timedelta(minutes=minutes),
        attachment_keys=[f"att/{a.sha256}" for a in parsed.attachments],
    )
    async with db.write() as conn:
        return await insert_message(conn, new)


async def test_three_message_conversation_with_broken_references(
    db: Database, inbox: Inbox
) -> None:
    first = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "alice@a.test",
                "To": "bot@example.test",
                "Subject": "Plan",
                "Message-ID": "<1@a.test>",
            }
        ),
        0,
    )
    # The reply keeps only its parent in References (as many mobile clients do).
    second = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "bot@example.test",
                "To": "alice@a.test",
                "Subject": "Re: Plan",
                "Message-ID": "<2@example.test>",
                "In-Reply-To": "<1@a.test>",
                "References": "<1@a.test>",
            }
        ),
        1,
    )
    # Broken References: no brackets, commas, garbage, and an id we never saw; the parent
    # is reachable only through In-Reply-To.
    third = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "alice@a.test",
                "To": "bot@example.test",
                "Subject": "AW: Re: Plan",
                "Message-ID": "<3@a.test>",
                "In-Reply-To": "<2@example.test>",
                "References": "lost@nowhere.test, <<garbage, <0@elsewhere.test>",
            }
        ),
        2,
    )
    assert first.thread_id == second.thread_id == third.thread_id
    [thread] = await _threads(db, inbox)
    assert thread.message_count == 3
    assert thread.subject == "Plan"
    assert thread.last_message_at == T0 + timedelta(minutes=2)


async def test_missing_middle_message_and_reply_arriving_first(db: Database, inbox: Inbox) -> None:
    # The grandchild arrives before everything, naming the whole chain.
    grandchild = await deliver(
        db,
        inbox,
        raw(
            {
                "Subject": "Re: Re: Q",
                "Message-ID": "<c@x.test>",
                "In-Reply-To": "<b@x.test>",
                "References": "<a@x.test> <b@x.test>",
            }
        ),
        0,
    )
    root = await deliver(db, inbox, raw({"Subject": "Q", "Message-ID": "<a@x.test>"}), 1)
    assert root.thread_id == grandchild.thread_id
    # The missing middle message joins too when it finally arrives.
    middle = await deliver(db, inbox, raw({"Subject": "Re: Q", "Message-ID": "<b@x.test>"}), 2)
    assert middle.thread_id == root.thread_id


async def test_subject_fallback_only_without_identification_headers(
    db: Database, inbox: Inbox
) -> None:
    start = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "alice@a.test",
                "To": "bot@example.test",
                "Subject": "Invoice 42",
                "Message-ID": "<i42@a.test>",
            }
        ),
        0,
    )
    # No In-Reply-To/References, a reply prefix, a shared participant: same thread.
    reply = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "bot@example.test",
                "To": "Alice <alice@a.test>",
                "Subject": "RE: Fwd: invoice 42",
            }
        ),
        1,
    )
    assert reply.thread_id == start.thread_id
    # Same subject without a reply prefix: a new conversation.
    fresh = await deliver(db, inbox, raw({"From": "alice@a.test", "Subject": "Invoice 42"}), 2)
    assert fresh.thread_id != start.thread_id
    # A reply prefix but strangers: not joined.
    stranger = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "eve@e.test",
                "To": "mallory@m.test",
                "Subject": "Re: Invoice 42",
            }
        ),
        3,
    )
    assert stranger.thread_id not in {start.thread_id, fresh.thread_id}
    # Headers present but unknown: no subject guessing.
    unknown = await deliver(
        db,
        inbox,
        raw(
            {
                "From": "alice@a.test",
                "To": "bot@example.test",
                "Subject": "Re: Invoice 42",
                "In-Reply-To": "<never-seen@a.test>",
            }
        ),
        4,
    )
    assert unknown.thread_id not in {start.thread_id, fresh.thread_id, stranger.thread_id}


async def test_threads_are_per_inbox(db: Database, inbox: Inbox) -> None:
    async with db.write() as conn:
        account = await create_account(conn, name="b", owner_email=None, now=T0)
        other = await create_inbox(conn, account_id=account, address="other@example.test", now=T0)
    data = raw({"Subject": "Hi", "Message-ID": "<same@x.test>"})
    one = await deliver(db, inbox, data, 0)
    two = await deliver(db, other, data, 0)
    assert one.thread_id != two.thread_id


async def test_uids_increase_and_event_written(db: Database, inbox: Inbox) -> None:
    stored = [await deliver(db, inbox, raw({"Subject": f"n{i}"}), i) for i in range(3)]
    assert [s.uid for s in stored] == [1, 2, 3]
    assert [s.modseq for s in stored] == [2, 3, 4]
    async with db.read() as conn:
        folder = (
            await conn.execute(
                select(m.folders).where(
                    m.folders.c.inbox_id == inbox.id, m.folders.c.name == "INBOX"
                )
            )
        ).one()
        events = (await conn.execute(select(m.events).order_by(m.events.c.seq))).all()
    assert (folder.uidnext, folder.highestmodseq) == (4, 4)
    assert [e.type for e in events] == ["message.received"] * 3
    assert [e.message_id for e in events] == [s.id for s in stored]
    assert events[0].payload["data"]["subject"] == "n0"


async def _threads(db: Database, inbox: Inbox) -> list[object]:
    async with db.read() as conn:
        return list(
            (await conn.execute(select(m.threads).where(m.threads.c.inbox_id == inbox.id))).all()
        )


async def test_a_batch_sees_its_own_messages(db: Database, inbox: Inbox) -> None:
    """Group commit stores several messages at once: a reply beside its parent still joins it."""
    async with db.write() as conn:
        account = await create_account(conn, name="b", owner_email=None, now=T0)
        other = await create_inbox(conn, account_id=account, address="other@example.test", now=T0)
    parent = raw({"Subject": "Batch", "Message-ID": "<p@x.test>"})
    child = raw({"Subject": "Re: Batch", "Message-ID": "<c@x.test>", "In-Reply-To": "<p@x.test>"})
    news = [
        NewMessage(
            inbox=box,
            parsed=parse_message(data),
            raw_key=f"msg/{n}.eml",
            size=len(data),
            received_at=T0 + timedelta(seconds=n),
            attachment_keys=[],
        )
        for n, (box, data) in enumerate([(inbox, parent), (other, parent), (inbox, child)])
    ]
    async with db.write() as conn:
        stored = await insert_messages(conn, news)
    assert stored[0].thread_id == stored[2].thread_id != stored[1].thread_id
    assert [(s.uid, s.modseq) for s in stored] == [(1, 2), (1, 2), (2, 3)]
    [thread] = [t for t in await _threads(db, inbox)]
    assert thread.message_count == 2


async def _waiting_on_a_lock(db: Database) -> bool:
    async with db.read() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


async def test_concurrent_transactions_indexing_one_message_id(db: Database, inbox: Inbox) -> None:
    """Two transactions store the same Message-ID at once (concurrent IMAP APPENDs on
    PostgreSQL; found by bench/imap.py): the second waits on the index entry the first holds,
    then leaves it be instead of failing on the unique key."""
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: the transactions cannot overlap")
    data = raw({"Message-ID": "<same@example.test>", "Subject": "twice"})

    def new(minutes: int) -> NewMessage:
        return NewMessage(
            inbox=inbox,
            parsed=parse_message(data),
            raw_key=f"msg/{minutes}.eml",
            size=len(data),
            received_at=T0 + timedelta(minutes=minutes),
            attachment_keys=[],
        )

    async def store_second() -> StoredMessage:
        async with db.write() as conn:
            return await insert_message(conn, new(2))

    async with db.write() as conn:
        first = await insert_message(conn, new(1))
        second = asyncio.create_task(store_second())
        deadline = asyncio.get_running_loop().time() + 10
        while not await _waiting_on_a_lock(db):  # the second blocks on the index entry
            assert not second.done(), second.exception()
            assert asyncio.get_running_loop().time() < deadline
    stored = await second
    async with db.read() as conn:
        refs = (await conn.execute(select(m.thread_refs.c.thread_id))).scalars().all()
    assert refs == [first.thread_id]
    assert stored.thread_id is not None
