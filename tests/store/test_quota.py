"""Quotas in the store, on SQLite and PostgreSQL: the stored-bytes counter agrees with the sum
of stored sizes after every kind of write, COPY over the limit copies nothing, concurrent
deliveries cannot pass the limit together, the inbox and daily send limits, and the
migration's backfill."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from mailboxkit.store import models as m
from mailboxkit.store import quota
from mailboxkit.store.accounts import Inbox, Scope, create_account, create_inbox
from mailboxkit.store.db import Database
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.folders import find_folder
from mailboxkit.store.inboxes import delete_inbox
from mailboxkit.store.mailboxes import (
    FlagMode,
    copy_entries,
    delete_folder,
    expunge,
    move_entries,
    remove_entries,
    rename_folder,
    update_flags,
)
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.migrate import upgrade
from mailboxkit.store.mime import parse_message
from mailboxkit.store.sweep import delete_messages_in_no_folder

from harness import OwnDatabase

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def raw_of(size: int) -> bytes:
    head = b"From: a@example.test\r\nSubject: s\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def new(inbox: Inbox, size: int, folder: str = "INBOX") -> NewMessage:
    raw = raw_of(size)
    assert len(raw) == size
    return NewMessage(
        inbox, parse_message(raw), f"msg/{uuid.uuid4()}.eml", size, T0, [], folder=folder
    )


async def used(db: Database, account_id: str) -> tuple[int, int]:
    """(the counter, the sum of stored sizes counted from the entries)."""
    async with db.read() as conn:
        counter = await conn.scalar(
            select(m.accounts.c.storage_used).where(m.accounts.c.id == account_id)
        )
        return int(counter), await quota.stored_bytes(conn, account_id)


async def folder_id(db: Database, inbox: Inbox, name: str) -> int:
    async with db.read() as conn:
        found = await find_folder(conn, inbox.id, name)
    assert found is not None
    return found.id


async def uids(db: Database, folder: int) -> list[int]:
    async with db.read() as conn:
        rows = await conn.scalars(
            select(m.entries.c.uid).where(m.entries.c.folder_id == folder).order_by("uid")
        )
        return list(rows)


async def test_the_counter_is_the_sum_of_stored_sizes_after_every_kind_of_write(
    db: Database, inbox: Inbox
) -> None:
    async with db.write() as conn:
        other_account = await create_account(conn, name="o", owner_email=None, now=T0)
        other = await create_inbox(
            conn, account_id=other_account, address="other@example.test", now=T0
        )
        second = await create_inbox(
            conn, account_id=inbox.account_id, address="second@example.test", now=T0
        )
    account = inbox.account_id
    steps = []

    async def check(step: str) -> None:
        counter, summed = await used(db, account)
        steps.append((step, counter, summed))
        assert counter == summed, steps

    async with db.write() as conn:  # a delivery to several inboxes, two accounts
        await insert_messages(
            conn, [new(inbox, 1000), new(inbox, 2000), new(second, 3000), new(other, 4000)]
        )
    await check("delivered")
    assert (await used(db, account))[0] == 6000
    assert (await used(db, other_account))[0] == 4000
    source, archive = await folder_id(db, inbox, "INBOX"), await folder_id(db, inbox, "Archive")
    async with db.write() as conn:
        await copy_entries(
            conn, source_folder_id=source, uids=await uids(db, source), target_folder_id=archive
        )
    await check("copied: each copy counts")
    assert (await used(db, account))[0] == 9000
    trash = await folder_id(db, inbox, "Trash")
    async with db.write() as conn:
        await move_entries(
            conn,
            source_folder_id=archive,
            uids=[(await uids(db, archive))[0]],
            target_folder_id=trash,
        )
    await check("moved")
    assert (await used(db, account))[0] == 9000
    async with db.write() as conn:
        await update_flags(
            conn,
            folder_id=source,
            uids=[(await uids(db, source))[0]],
            mode=FlagMode.ADD,
            flags=[SystemFlag.DELETED],
        )
        await expunge(conn, folder_id=source)
    await check("expunged one copy: the other stays")
    assert (await used(db, account))[0] == 8000
    async with db.write() as conn:
        await remove_entries(conn, folder_id=trash, uids=await uids(db, trash))
    await check("removed (a draft replaced)")
    async with db.write() as conn:
        await rename_folder(conn, inbox_id=inbox.id, old="INBOX", new="Old", now=T0)
    await check("renamed INBOX")
    async with db.write() as conn:
        await insert_messages(conn, [new(inbox, 500, "Archive"), new(inbox, 700)])
        await delete_folder(conn, folder_id=archive)
    await check("deleted a folder")
    async with db.write() as conn:
        leftovers = await conn.scalars(select(m.messages.c.id))
        await delete_messages_in_no_folder(conn, list(leftovers))
    await check("swept")
    async with db.write() as conn:
        await delete_inbox(conn, Scope(account), second.id)
    await check("deleted an inbox")
    async with db.write() as conn:
        await delete_inbox(conn, Scope(account), inbox.id)
    assert await used(db, account) == (0, 0)
    assert (await used(db, other_account))[0] == 4000


async def set_storage(db: Database, account_id: str, limit: int | None) -> None:
    async with db.write() as conn:
        assert await quota.set_limits(conn, account_id, {"storage_limit": limit})


async def test_copy_over_the_limit_copies_nothing_and_freeing_space_lets_it_in(
    db: Database, inbox: Inbox
) -> None:
    async with db.write() as conn:
        await insert_messages(conn, [new(inbox, 1000), new(inbox, 1000)])
    await set_storage(db, inbox.account_id, 3000)
    source, archive = await folder_id(db, inbox, "INBOX"), await folder_id(db, inbox, "Archive")
    with pytest.raises(quota.StorageQuotaExceeded):
        async with db.write() as conn:
            await copy_entries(
                conn,
                source_folder_id=source,
                uids=await uids(db, source),
                target_folder_id=archive,
                enforce_quota=True,
            )
    assert await uids(db, archive) == []
    assert await used(db, inbox.account_id) == (2000, 2000)
    async with db.write() as conn:  # one copy fits exactly
        await copy_entries(
            conn,
            source_folder_id=source,
            uids=(await uids(db, source))[:1],
            target_folder_id=archive,
            enforce_quota=True,
        )
    assert await used(db, inbox.account_id) == (3000, 3000)


async def test_concurrent_deliveries_cannot_pass_the_limit_together(
    db: Database, inbox: Inbox
) -> None:
    await set_storage(db, inbox.account_id, 5000)

    async def deliver() -> bool:
        async with db.write() as conn:
            locked = await quota.lock_accounts(conn, [inbox.account_id])
            if not locked[inbox.account_id].fits(1000):
                return False
            await insert_messages(conn, [new(inbox, 1000)])
            return True

    results = await asyncio.gather(*(deliver() for _ in range(12)))
    assert results.count(True) == 5
    assert await used(db, inbox.account_id) == (5000, 5000)


async def test_inbox_limit(db: Database, inbox: Inbox) -> None:
    async with db.write() as conn:
        assert await quota.set_limits(conn, inbox.account_id, {"inbox_limit": 2})
        extra = await create_inbox(
            conn, account_id=inbox.account_id, address="two@example.test", now=T0
        )
    with pytest.raises(quota.InboxLimitReached):
        async with db.write() as conn:
            await create_inbox(
                conn, account_id=inbox.account_id, address="three@example.test", now=T0
            )
    async with db.write() as conn:
        await delete_inbox(conn, Scope(inbox.account_id), extra.id)
        await create_inbox(conn, account_id=inbox.account_id, address="three@example.test", now=T0)
        found = await quota.get_quota(conn, inbox.account_id, now=T0)
    assert found is not None and found.inboxes == 2 and found.limits.inboxes == 2


async def test_new_accounts_take_the_given_limits(db: Database) -> None:
    limits = quota.Limits(storage=10_000, inboxes=3, sends_per_day=50)
    async with db.write() as conn:
        account = await create_account(conn, name="n", owner_email=None, now=T0, limits=limits)
        found = await quota.get_quota(conn, account, now=T0)
    assert found == quota.Quota(limits, 0, 0, 0)


async def test_daily_send_limit_counts_per_utc_day(db: Database, inbox: Inbox) -> None:
    account = inbox.account_id
    late = T0.replace(hour=23, minute=59)
    async with db.write() as conn:
        assert await quota.set_limits(conn, account, {"daily_send_limit": 2})
        assert await quota.count_send(conn, account, now=late)
        assert await quota.count_send(conn, account, now=late)
        assert not await quota.count_send(conn, account, now=late)
        assert not await quota.may_send(conn, account, now=late)
        await quota.uncount_send(conn, account, now=late)  # one not queued after all
        assert await quota.may_send(conn, account, now=late)
        assert await quota.count_send(conn, account, now=late)
        tomorrow = late + timedelta(minutes=1)
        assert quota.next_day(late) == tomorrow
        assert await quota.count_send(conn, account, now=tomorrow)
        assert (await quota.get_quota(conn, account, now=tomorrow)) == quota.Quota(
            quota.Limits(sends_per_day=2), 0, 1, 1
        )
        assert await quota.set_limits(conn, account, {"daily_send_limit": None})
        assert all([await quota.count_send(conn, account, now=late) for _ in range(5)])


BACKFILL_ROWS = """
INSERT INTO accounts (id, name, status, created_at) VALUES
    ('acc-1', 'a', 'active', '2026-11-01 09:00:00'),
    ('acc-2', 'b', 'active', '2026-11-01 09:00:00'),
    ('acc-3', 'c', 'active', '2026-11-01 09:00:00');
INSERT INTO domains (id, name, created_at) VALUES ('dom', 'example.test', '2026-11-01 09:00:00');
INSERT INTO inboxes (id, account_id, domain_id, local_part, address, metadata, created_at) VALUES
    ('in-1', 'acc-1', 'dom', 'a', 'a@example.test', '{}', '2026-11-01 09:00:00'),
    ('in-2', 'acc-1', 'dom', 'b', 'b@example.test', '{}', '2026-11-01 09:00:00'),
    ('in-3', 'acc-2', 'dom', 'c', 'c@example.test', '{}', '2026-11-01 09:00:00');
INSERT INTO folders (id, inbox_id, name, uidvalidity, created_at) VALUES
    (1, 'in-1', 'INBOX', 1, '2026-11-01 09:00:00'),
    (2, 'in-1', 'Archive', 1, '2026-11-01 09:00:00'),
    (3, 'in-2', 'INBOX', 1, '2026-11-01 09:00:00'),
    (4, 'in-3', 'INBOX', 1, '2026-11-01 09:00:00');
INSERT INTO messages
    (id, inbox_id, direction, raw_key, size, received_at, envelope_to, reference_ids,
     to_addrs, cc_addrs, reply_to_addrs, headers)
VALUES
    ('m-1', 'in-1', 'inbound', 'k', 100, '2026-11-01 09:00:00', '[]', '[]', '[]', '[]', '[]', '[]'),
    ('m-2', 'in-2', 'inbound', 'k', 20, '2026-11-01 09:00:00', '[]', '[]', '[]', '[]', '[]', '[]'),
    ('m-3', 'in-3', 'inbound', 'k', 3, '2026-11-01 09:00:00', '[]', '[]', '[]', '[]', '[]', '[]'),
    ('m-4', 'in-1', 'inbound', 'k', 5000, '2026-11-01 09:00:00', '[]', '[]', '[]', '[]', '[]',
     '[]');
INSERT INTO entries (folder_id, message_id, uid, modseq, internal_date, keywords) VALUES
    (1, 'm-1', 1, 1, '2026-11-01 09:00:00', '[]'),
    (2, 'm-1', 1, 1, '2026-11-01 09:00:00', '[]'),
    (3, 'm-2', 1, 1, '2026-11-01 09:00:00', '[]'),
    (4, 'm-3', 1, 1, '2026-11-01 09:00:00', '[]');
"""
"""Account 1: a 100-byte message in two folders and a 20-byte one in its second inbox (m-4 is
in no folder: not counted); account 2: 3 bytes; account 3: nothing."""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migration_backfills_the_counter(
    kind: str, tmp_path: object, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    else:
        own = OwnDatabase(
            request.getfixturevalue("postgres_database"), f"mbk_quota_{uuid.uuid4().hex[:12]}"
        )
        own.run(f'CREATE DATABASE "{own.name}"')
        request.addfinalizer(lambda: own.run(f'DROP DATABASE IF EXISTS "{own.name}" WITH (FORCE)'))
        url = own.url
    await asyncio.to_thread(upgrade, url, "0009")
    db = Database.open(url)
    try:
        async with db.write() as conn:
            for statement in BACKFILL_ROWS.split(";"):
                if statement.strip():
                    await conn.execute(text(statement))
        await asyncio.to_thread(upgrade, url)
        async with db.read() as conn:
            rows = await conn.execute(
                select(m.accounts.c.id, m.accounts.c.storage_used, m.accounts.c.storage_limit)
            )
            found = {row.id: (row.storage_used, row.storage_limit) for row in rows}
            assert await quota.stored_bytes(conn, "acc-1") == 220
    finally:
        await db.close()
    assert found == {"acc-1": (220, None), "acc-2": (3, None), "acc-3": (0, None)}
