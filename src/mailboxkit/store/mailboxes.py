"""Changes to entries, the messages of a folder as IMAP sees them: flags and keywords,
expunges, copies and moves; and deleting or renaming folders, which moves entries too.

Used by the IMAP server and by the HTTP API (read state and labels are entry flags and
keywords: :func:`update_flags`). Every function runs in the caller's transaction; after
commit the caller rings ``mailbox_changes.MailboxChanges.notify`` for the inbox. Reading
entries is ``entries``; folders themselves are ``folders``.

Implementation notes (invariants, on top of those in ``models``):

- Every change to a folder's entries happens with the folder row locked (``FOR UPDATE`` on
  PostgreSQL; SQLite has one writer) and bumps ``folders.highestmodseq`` once; the changed
  entries (or the ``folder_expunges`` tombstones) take that value (RFC 7162 §3.1: a
  mod-sequence may be shared by the messages one operation changed). So changes commit in
  MODSEQ order per folder, which readers rely on (``entries``).
- A message whose last entry is expunged is deleted (rows, attachments rows); its blobs are
  left for the store sweep (``sweep``), since the raw blob of an SMTP transaction is shared by
  its recipients and an attachment blob by every message with the same content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.entries import FLAG_COLUMN, EntryFlags, SystemFlag, entry_of, uid_batches
from mailboxkit.store.folders import (
    DELIMITER,
    INBOX,
    Folder,
    FolderExists,
    FolderMissing,
    create_folder,
    find_folder,
    folder_of,
    insert_folder,
    list_folders,
    lock_folders,
    parents,
)
from mailboxkit.store.quota import (
    Storage,
    StorageQuotaExceeded,
    charge,
    entry_bytes,
    folder_accounts,
    lock_accounts,
)


class FlagMode(StrEnum):
    """How :func:`update_flags` applies its flags (RFC 3501 §6.4.6 +FLAGS, -FLAGS, FLAGS)."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class FlagChanges:
    """The result of :func:`update_flags`."""

    modseq: int | None  # the MODSEQ the updated entries took; None if nothing changed
    updated: tuple[EntryFlags, ...]
    unchanged: tuple[EntryFlags, ...]  # matched, flags already so (or in ``conflicts``)
    conflicts: tuple[int, ...]  # UIDs whose MODSEQ exceeded ``unchanged_since``


@dataclass(frozen=True, slots=True)
class Expunged:
    uids: tuple[int, ...]
    modseq: int | None


@dataclass(frozen=True, slots=True)
class Copied:
    """UIDs of a COPY or MOVE: ``pairs`` of (source UID, new UID), ascending (RFC 4315 §3)."""

    uidvalidity: int
    pairs: tuple[tuple[int, int], ...]


# --- changing entries ---------------------------------------------------------------------


async def _all_uids(conn: AsyncConnection, folder_id: int) -> list[int]:
    rows = await conn.execute(select(m.entries.c.uid).where(m.entries.c.folder_id == folder_id))
    return list(rows.scalars())


async def _bump(conn: AsyncConnection, folder_id: int, *, uids: int = 0) -> Folder:
    """Take the folder's next MODSEQ (and ``uids`` new UIDs); returns the updated row."""
    row = (
        await conn.execute(
            update(m.folders)
            .where(m.folders.c.id == folder_id)
            .values(highestmodseq=m.folders.c.highestmodseq + 1, uidnext=m.folders.c.uidnext + uids)
            .returning(*m.folders.c)
        )
    ).one()
    return folder_of(row)


async def _locked_entries(
    conn: AsyncConnection, folder_id: int, uids: Iterable[int], *extra: ColumnElement[bool]
) -> list[Any]:
    rows: list[Any] = []
    for condition in uid_batches(uids):
        result = await conn.execute(
            select(m.entries).where(m.entries.c.folder_id == folder_id, condition, *extra)
        )
        rows.extend(result)
    return sorted(rows, key=lambda row: row.uid)


def _apply(
    entry: EntryFlags, mode: FlagMode, flags: frozenset[SystemFlag], keywords: Sequence[str]
) -> EntryFlags:
    if mode is FlagMode.REPLACE:
        return EntryFlags(entry.uid, entry.modseq, flags, _unique(keywords))
    if mode is FlagMode.ADD:
        return EntryFlags(
            entry.uid, entry.modseq, entry.flags | flags, _unique([*entry.keywords, *keywords])
        )
    drop = {k.lower() for k in keywords}
    kept = tuple(k for k in entry.keywords if k.lower() not in drop)
    return EntryFlags(entry.uid, entry.modseq, entry.flags - flags, kept)


def _unique(keywords: Iterable[str]) -> tuple[str, ...]:
    """Keywords without repeats; keywords compare case-insensitively (RFC 3501 §2.3.2)."""
    seen: dict[str, str] = {}
    for keyword in keywords:
        seen.setdefault(keyword.lower(), keyword)
    return tuple(seen.values())


async def update_flags(
    conn: AsyncConnection,
    *,
    folder_id: int,
    uids: Iterable[int],
    mode: FlagMode,
    flags: Iterable[SystemFlag] = (),
    keywords: Sequence[str] = (),
    unchanged_since: int | None = None,
    now: datetime | None = None,
) -> FlagChanges:
    """Add, remove or replace flags and keywords of entries (RFC 3501 §6.4.6), with the
    UNCHANGEDSINCE test of RFC 7162 §3.1.3: an entry whose MODSEQ is above it is left alone
    and reported in ``conflicts``. Changed entries take one new MODSEQ. UIDs not in the
    folder are ignored. ``now`` is accepted for callers that record when; it is not stored.
    """
    wanted = frozenset(flags)
    await lock_folders(conn, [folder_id])
    updated: list[EntryFlags] = []
    unchanged: list[EntryFlags] = []
    conflicts: list[int] = []
    changed_ids: list[int] = []
    for row in await _locked_entries(conn, folder_id, uids):
        entry = entry_of(row)
        if unchanged_since is not None and entry.modseq > unchanged_since:
            conflicts.append(entry.uid)
            unchanged.append(entry)
            continue
        after = _apply(entry, mode, wanted, keywords)
        if after.flags == entry.flags and after.keywords == entry.keywords:
            unchanged.append(entry)
        else:
            updated.append(after)
            changed_ids.append(row.id)
    if not updated:
        return FlagChanges(None, (), tuple(unchanged), tuple(conflicts))
    modseq = (await _bump(conn, folder_id)).highestmodseq
    await conn.execute(
        update(m.entries).where(m.entries.c.id == bindparam("entry_id")),
        [
            {"entry_id": row_id, "modseq": modseq, **_flag_values(entry)}
            for row_id, entry in zip(changed_ids, updated, strict=True)
        ],
    )
    final = tuple(EntryFlags(e.uid, modseq, e.flags, e.keywords) for e in updated)
    return FlagChanges(modseq, final, tuple(unchanged), tuple(conflicts))


def _flag_values(entry: EntryFlags) -> dict[str, Any]:
    values: dict[str, Any] = {col: flag in entry.flags for flag, col in FLAG_COLUMN.items()}
    values["keywords"] = list(entry.keywords)
    return values


async def set_entry_flags(
    conn: AsyncConnection,
    *,
    folder_id: int,
    uid: int,
    flags: Iterable[SystemFlag],
    keywords: Sequence[str],
) -> None:
    """Set the flags of an entry made in this same transaction (no MODSEQ bump: no one has
    seen it yet). Used by APPEND after ``messages.insert_message``."""
    entry = EntryFlags(uid, 0, frozenset(flags), _unique(keywords))
    await conn.execute(
        update(m.entries)
        .where(m.entries.c.folder_id == folder_id, m.entries.c.uid == uid)
        .values(**_flag_values(entry))
    )


async def expunge(
    conn: AsyncConnection, *, folder_id: int, uids: Iterable[int] | None = None
) -> Expunged:
    """Remove the entries flagged ``\\Deleted`` (among ``uids`` if given: UID EXPUNGE,
    RFC 4315 §2.1), remembering each UID in ``folder_expunges`` (RFC 7162 §3.2.10)."""
    owner, _ = await _lock_owner(conn, folder_id)
    await lock_folders(conn, [folder_id])
    if uids is None:
        uids = await _all_uids(conn, folder_id)
    rows = await _locked_entries(conn, folder_id, uids, m.entries.c.deleted.is_(True))
    return await _remove(conn, folder_id, rows, owner)


async def remove_entries(conn: AsyncConnection, *, folder_id: int, uids: Iterable[int]) -> Expunged:
    """Remove entries whatever their flags, as an expunge does (a draft replaced or sent)."""
    owner, _ = await _lock_owner(conn, folder_id)
    await lock_folders(conn, [folder_id])
    return await _remove(conn, folder_id, await _locked_entries(conn, folder_id, uids), owner)


async def _lock_owner(conn: AsyncConnection, folder_id: int) -> tuple[str, Storage]:
    """Lock the row of the account the folder belongs to, before any folder row (the lock
    order of ``store.quota``): its id and storage. A folder that is gone has none (and
    ``lock_folders`` says so next)."""
    owners = await lock_accounts(conn, await folder_accounts(conn, [folder_id]))
    return next(iter(owners.items()), ("", Storage(0, None)))


async def _remove(
    conn: AsyncConnection, folder_id: int, rows: Sequence[Any], account_id: str
) -> Expunged:
    """Delete the entries ``rows`` of the folder, freeing their bytes of ``account_id``
    (whose row the caller locked first)."""
    if not rows:
        return Expunged((), None)
    await charge(conn, {account_id: -await entry_bytes(conn, [row.message_id for row in rows])})
    modseq = (await _bump(conn, folder_id)).highestmodseq
    ids = [row.id for row in rows]
    for start in range(0, len(ids), 1000):
        await conn.execute(delete(m.entries).where(m.entries.c.id.in_(ids[start : start + 1000])))
    await conn.execute(
        insert(m.folder_expunges),
        [{"folder_id": folder_id, "uid": row.uid, "modseq": modseq} for row in rows],
    )
    await _delete_orphans(conn, [row.message_id for row in rows])
    return Expunged(tuple(row.uid for row in rows), modseq)


async def _delete_orphans(conn: AsyncConnection, message_ids: Iterable[str]) -> None:
    """Delete messages no entry shows any more, and count them out of their threads."""
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        still = select(m.entries.c.message_id).where(m.entries.c.message_id.in_(chunk))
        orphans = (
            await conn.execute(
                select(m.messages.c.id, m.messages.c.thread_id).where(
                    m.messages.c.id.in_(chunk), m.messages.c.id.not_in(still)
                )
            )
        ).all()
        if not orphans:
            continue
        for row in orphans:
            if row.thread_id is not None:
                await conn.execute(
                    update(m.threads)
                    .where(m.threads.c.id == row.thread_id, m.threads.c.message_count > 0)
                    .values(message_count=m.threads.c.message_count - 1)
                )
        await conn.execute(delete(m.messages).where(m.messages.c.id.in_([r.id for r in orphans])))


async def copy_entries(
    conn: AsyncConnection,
    *,
    source_folder_id: int,
    uids: Iterable[int],
    target_folder_id: int,
    enforce_quota: bool = False,
) -> Copied:
    """COPY (RFC 3501 §6.4.7): new entries in the target, in ascending source UID order, with
    the same flags, keywords and internal date (RFC 4315 §3 COPYUID pairs). Each copy counts
    into the target's account; with ``enforce_quota``, raises
    :class:`~mailboxkit.store.quota.StorageQuotaExceeded` (nothing copied) when the copies
    would take it over its storage limit."""
    owner, storage = await _lock_owner(conn, target_folder_id)
    folders = await lock_folders(conn, [source_folder_id, target_folder_id])
    rows = await _locked_entries(conn, source_folder_id, uids)
    if enforce_quota and not storage.fits(await entry_bytes(conn, [r.message_id for r in rows])):
        raise StorageQuotaExceeded(target_folder_id)
    return await _copy_rows(conn, rows, folders[target_folder_id], owner)


async def _copy_rows(
    conn: AsyncConnection, rows: Sequence[Any], target: Folder, account_id: str
) -> Copied:
    """Copy the entries ``rows`` into ``target``, counting them into ``account_id`` (the
    target's account, whose row the caller locked first)."""
    if not rows:
        return Copied(target.uidvalidity, ())
    await charge(conn, {account_id: await entry_bytes(conn, [row.message_id for row in rows])})
    bumped = await _bump(conn, target.id, uids=len(rows))
    first = bumped.uidnext - len(rows)
    await conn.execute(
        insert(m.entries),
        [
            {
                "folder_id": target.id,
                "message_id": row.message_id,
                "uid": first + i,
                "modseq": bumped.highestmodseq,
                "internal_date": row.internal_date,
                **{col: getattr(row, col) for col in FLAG_COLUMN.values()},
                "keywords": list(row.keywords or ()),
            }
            for i, row in enumerate(rows)
        ],
    )
    pairs = tuple((row.uid, first + i) for i, row in enumerate(rows))
    return Copied(target.uidvalidity, pairs)


@dataclass(frozen=True, slots=True)
class Moved:
    copied: Copied
    expunged: Expunged


async def move_entries(
    conn: AsyncConnection, *, source_folder_id: int, uids: Iterable[int], target_folder_id: int
) -> Moved:
    """MOVE (RFC 6851 §3): copy, then expunge the sources whatever their flags. Within one
    account the stored bytes do not change, so a move is never refused for quota."""
    [source_owner] = await folder_accounts(conn, [source_folder_id]) or [""]
    [target_owner] = await folder_accounts(conn, [target_folder_id]) or [""]
    await lock_accounts(conn, [source_owner, target_owner])
    folders = await lock_folders(conn, [source_folder_id, target_folder_id])
    rows = await _locked_entries(conn, source_folder_id, uids)
    copied = await _copy_rows(conn, rows, folders[target_folder_id], target_owner)
    expunged = await _remove(conn, source_folder_id, rows, source_owner)
    return Moved(copied, expunged)


# --- deleting and renaming folders -------------------------------------------------------


async def delete_folder(conn: AsyncConnection, *, folder_id: int) -> None:
    """Delete a folder and its entries; messages left in no folder are deleted too."""
    owner, _ = await _lock_owner(conn, folder_id)
    message_ids = list(
        (
            await conn.execute(
                select(m.entries.c.message_id).where(m.entries.c.folder_id == folder_id)
            )
        ).scalars()
    )
    if message_ids:
        await charge(conn, {owner: -await entry_bytes(conn, message_ids)})
    await conn.execute(delete(m.entries).where(m.entries.c.folder_id == folder_id))
    await conn.execute(delete(m.folder_expunges).where(m.folder_expunges.c.folder_id == folder_id))
    await conn.execute(delete(m.folders).where(m.folders.c.id == folder_id))
    await _delete_orphans(conn, message_ids)


async def rename_folder(
    conn: AsyncConnection, *, inbox_id: str, old: str, new: str, now: datetime
) -> None:
    """RENAME (RFC 3501 §6.3.5): the folder and its children; missing parents of ``new`` are
    created. Renaming INBOX moves its messages to a new folder and leaves INBOX empty.
    Raises :class:`FolderMissing` or :class:`FolderExists`."""
    source = await find_folder(conn, inbox_id, old)
    if source is None:
        raise FolderMissing(old)
    if await find_folder(conn, inbox_id, new) is not None:
        raise FolderExists(new)
    if old == INBOX:
        target = await create_folder(conn, inbox_id=inbox_id, name=new, now=now)
        uids = await _all_uids(conn, source.id)
        await move_entries(conn, source_folder_id=source.id, uids=uids, target_folder_id=target.id)
        return
    for parent in parents(new):
        if parent != old and await find_folder(conn, inbox_id, parent) is None:
            await insert_folder(conn, inbox_id, parent, None, now)
    for folder in await list_folders(conn, inbox_id):
        if folder.name == old or folder.name.startswith(old + DELIMITER):
            renamed = new + folder.name[len(old) :]
            await conn.execute(
                update(m.folders).where(m.folders.c.id == folder.id).values(name=renamed)
            )
