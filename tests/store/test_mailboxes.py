"""Folders and entries on SQLite and PostgreSQL: flags with MODSEQ and UNCHANGEDSINCE, entries
read back with their flags and keywords, changes since a MODSEQ, expunge tombstones, copy and
move UIDs, folder rename and delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.db import Database
from mailboxkit.store.entries import (
    SystemFlag,
    changed_entries,
    changes_since,
    entry_contents,
    snapshot,
)
from mailboxkit.store.folders import (
    FolderExists,
    FolderMissing,
    create_folder,
    find_folder,
    folder_status,
    get_folder,
    list_folders,
)
from mailboxkit.store.mailbox_changes import MailboxChanges
from mailboxkit.store.mailboxes import (
    FlagMode,
    copy_entries,
    delete_folder,
    expunge,
    move_entries,
    rename_folder,
    update_flags,
)
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.mime import parse_message

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
RAW = b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"


async def add(db: Database, inbox: Inbox, count: int, folder: str = "INBOX") -> None:
    news = [
        NewMessage(
            inbox=inbox,
            parsed=parse_message(RAW),
            raw_key=f"msg/{i}.eml",
            size=len(RAW),
            received_at=T0,
            attachment_keys=[],
            folder=folder,
        )
        for i in range(count)
    ]
    async with db.write() as conn:
        await insert_messages(conn, news)


async def folder_id(db: Database, inbox: Inbox, name: str) -> int:
    async with db.read() as conn:
        folder = await find_folder(conn, inbox.id, name)
    assert folder is not None
    return folder.id


async def test_update_flags_bumps_one_modseq_and_honours_unchanged_since(
    db: Database, inbox: Inbox
) -> None:
    await add(db, inbox, 3)
    inbox_folder = await folder_id(db, inbox, "INBOX")
    async with db.write() as conn:
        before = (await snapshot(conn, inbox_folder)).folder.highestmodseq
        changes = await update_flags(
            conn,
            folder_id=inbox_folder,
            uids=[1, 2, 9],
            mode=FlagMode.ADD,
            flags=[SystemFlag.SEEN],
            keywords=["$Label"],
            now=T0,
        )
    assert changes.modseq == before + 1
    assert [(e.uid, e.modseq) for e in changes.updated] == [(1, before + 1), (2, before + 1)]
    assert changes.updated[0].imap_flags() == ("\\Seen", "$Label")
    async with db.write() as conn:
        again = await update_flags(
            conn,
            folder_id=inbox_folder,
            uids=[1, 2, 3],
            mode=FlagMode.REMOVE,
            flags=[SystemFlag.SEEN],
            keywords=["$LABEL"],
            unchanged_since=before,
        )
    assert again.conflicts == (1, 2)
    assert [e.uid for e in again.unchanged] == [1, 2, 3]  # 3 had nothing to remove
    assert again.modseq is None


async def test_every_reader_sees_the_flags_and_keywords_stored(db: Database, inbox: Inbox) -> None:
    await add(db, inbox, 3)
    inbox_folder = await folder_id(db, inbox, "INBOX")
    async with db.write() as conn:
        await update_flags(
            conn,
            folder_id=inbox_folder,
            uids=[1, 2],
            mode=FlagMode.ADD,
            flags=[SystemFlag.FLAGGED],
            keywords=["$Label1", "Work"],
        )
        await update_flags(
            conn, folder_id=inbox_folder, uids=[2], mode=FlagMode.ADD, flags=[SystemFlag.SEEN]
        )
    expected = [
        ("\\Flagged", "$Label1", "Work"),
        ("\\Seen", "\\Flagged", "$Label1", "Work"),
        (),
    ]
    async with db.read() as conn:
        selected = await snapshot(conn, inbox_folder)
        changed = await changed_entries(conn, inbox_folder, modseq=0, uids=[1, 2, 3])
        contents = await entry_contents(conn, inbox_folder, [1, 2, 3])
    assert [e.imap_flags() for e in selected.entries] == expected
    assert [e.imap_flags() for e in changed] == expected
    assert [c.entry.imap_flags() for c in contents] == expected


async def test_changes_since_sees_updates_additions_and_expunges(
    db: Database, inbox: Inbox
) -> None:
    await add(db, inbox, 3)
    inbox_folder = await folder_id(db, inbox, "INBOX")
    async with db.read() as conn:
        start = await snapshot(conn, inbox_folder)
    async with db.write() as conn:
        await update_flags(
            conn,
            folder_id=inbox_folder,
            uids=[1, 3],
            mode=FlagMode.REPLACE,
            flags=[SystemFlag.DELETED],
        )
        removed = await expunge(conn, folder_id=inbox_folder, uids=[3])
    await add(db, inbox, 1)
    async with db.read() as conn:
        changes = await changes_since(
            conn, inbox_folder, modseq=start.folder.highestmodseq, last_uid=3
        )
        status = await folder_status(conn, inbox_folder)
        folder = await get_folder(conn, inbox_folder)
    assert removed.uids == (3,)
    assert [(e.uid, e.imap_flags()) for e in changes.updated] == [(1, ("\\Deleted",))]
    assert [(e.uid, e.imap_flags()) for e in changes.added] == [(4, ())]
    assert changes.expunged == (3,)
    assert changes.highestmodseq == folder.highestmodseq > start.folder.highestmodseq
    assert (status.messages, status.deleted, status.unseen) == (3, 1, 3)
    async with db.read() as conn:
        nothing = await changes_since(conn, inbox_folder, modseq=changes.highestmodseq, last_uid=4)
    assert (nothing.updated, nothing.added, nothing.expunged) == ((), (), ())
    assert nothing.highestmodseq == changes.highestmodseq
    async with db.read() as conn:
        with pytest.raises(FolderMissing):
            await changes_since(conn, inbox_folder + 1000, modseq=0, last_uid=0)


async def test_copy_and_move_allocate_uids_in_order(db: Database, inbox: Inbox) -> None:
    await add(db, inbox, 4)
    source, archive = await folder_id(db, inbox, "INBOX"), await folder_id(db, inbox, "Archive")
    async with db.write() as conn:
        copied = await copy_entries(
            conn, source_folder_id=source, uids=[4, 2], target_folder_id=archive
        )
        moved = await move_entries(
            conn, source_folder_id=source, uids=[1, 3], target_folder_id=archive
        )
    assert copied.pairs == ((2, 1), (4, 2))
    assert moved.copied.pairs == ((1, 3), (3, 4))
    assert moved.expunged.uids == (1, 3)
    async with db.read() as conn:
        assert [e.uid for e in (await snapshot(conn, source)).entries] == [2, 4]
        assert [e.uid for e in (await snapshot(conn, archive)).entries] == [1, 2, 3, 4]
        count = await conn.scalar(select(func.count()).select_from(m.messages))
    assert count == 4


async def test_expunging_the_last_entry_deletes_the_message(db: Database, inbox: Inbox) -> None:
    await add(db, inbox, 2)
    source = await folder_id(db, inbox, "INBOX")
    async with db.write() as conn:
        await update_flags(
            conn, folder_id=source, uids=[1, 2], mode=FlagMode.ADD, flags=[SystemFlag.DELETED]
        )
        await expunge(conn, folder_id=source)
        count = await conn.scalar(select(func.count()).select_from(m.messages))
        threads = await conn.scalar(select(func.sum(m.threads.c.message_count)))
    assert count == 0
    assert threads == 0


async def test_folders_create_rename_delete(db: Database, inbox: Inbox) -> None:
    async with db.write() as conn:
        work = await create_folder(conn, inbox_id=inbox.id, name="Work/2024", now=T0)
        with pytest.raises(FolderExists):
            await create_folder(conn, inbox_id=inbox.id, name="Work", now=T0)
        await rename_folder(conn, inbox_id=inbox.id, old="Work", new="Jobs/Work", now=T0)
        names = [f.name for f in await list_folders(conn, inbox.id)]
        assert {"Jobs", "Jobs/Work", "Jobs/Work/2024"} <= set(names)
        assert "Work" not in names
        renamed = await find_folder(conn, inbox.id, "Jobs/Work/2024")
        assert renamed is not None and renamed.uidvalidity == work.uidvalidity
        await delete_folder(conn, folder_id=renamed.id)
        assert await find_folder(conn, inbox.id, "Jobs/Work/2024") is None
    await add(db, inbox, 2)
    async with db.write() as conn:
        await rename_folder(conn, inbox_id=inbox.id, old="INBOX", new="Old", now=T0)
        old = await find_folder(conn, inbox.id, "Old")
        assert old is not None and old.uidnext == 3
        emptied = await find_folder(conn, inbox.id, "INBOX")
        assert emptied is not None
        assert (await folder_status(conn, emptied.id)).messages == 0


async def test_concurrent_flag_updates_get_distinct_modseqs(db: Database, inbox: Inbox) -> None:
    await add(db, inbox, 2)
    source = await folder_id(db, inbox, "INBOX")

    async def flag(uid: int) -> int | None:
        async with db.write() as conn:
            changes = await update_flags(
                conn, folder_id=source, uids=[uid], mode=FlagMode.ADD, flags=[SystemFlag.FLAGGED]
            )
            return changes.modseq

    results = await asyncio.gather(*(flag(uid) for uid in (1, 2)))
    assert len(set(results)) == 2


async def test_change_notices_ring_watches_of_the_inbox() -> None:
    changes = MailboxChanges()
    mine, other = changes.watch("a"), changes.watch("b")
    changes.notify("a")
    assert mine.rung.is_set() and not other.rung.is_set()
    changes.notify_all()
    assert other.rung.is_set()
    mine.close()
    other.close()
    changes.notify("a")  # no watches left: nothing to do
