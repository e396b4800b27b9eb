"""Folders of an inbox: names, special uses, subscriptions, UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ.

The entries in them are read in ``entries`` and changed in ``mailboxes``, where deleting and
renaming (which touch entries) are too. Every function runs in the caller's transaction.

Implementation notes:

- One hierarchy per inbox, delimiter ``/``; INBOX is spelled ``INBOX`` (RFC 3501 §5.1).
  Creating ``a/b`` creates ``a`` if it is missing (RFC 3501 §6.3.3).
- A new folder's ``uidvalidity`` is above every other folder's of the inbox and not below
  the creation time in seconds (RFC 3501 §2.3.1.1). A folder deleted and re-created within
  the same second can get its old UIDVALIDITY back if it had the largest one: nothing
  remembers deleted folders (a per-inbox counter column would).
- :func:`lock_folders` locks rows in id order, so two-folder operations cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m

INBOX = "INBOX"
DELIMITER = "/"
MAX_UIDVALIDITY = 4_294_967_295


class FolderExists(Exception):
    """A folder of that name exists already."""


class FolderMissing(LookupError):
    """No folder of that name or id."""


@dataclass(frozen=True, slots=True)
class Folder:
    id: int
    inbox_id: str
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool


@dataclass(frozen=True, slots=True)
class FolderStatus:
    messages: int
    unseen: int
    deleted: int
    size: int


def folder_of(row: Any) -> Folder:
    return Folder(
        row.id,
        row.inbox_id,
        row.name,
        row.special_use,
        row.uidvalidity,
        row.uidnext,
        row.highestmodseq,
        bool(row.subscribed),
    )


async def list_folders(conn: AsyncConnection, inbox_id: str) -> list[Folder]:
    rows = await conn.execute(
        select(m.folders).where(m.folders.c.inbox_id == inbox_id).order_by(m.folders.c.name)
    )
    return [folder_of(r) for r in rows]


# Built once: IMAP reads a folder by name or id in most commands, and building the statement
# took longer than running it.
_BY_NAME = select(m.folders).where(
    m.folders.c.inbox_id == bindparam("inbox_id"), m.folders.c.name == bindparam("name")
)
_BY_ID = select(m.folders).where(m.folders.c.id == bindparam("folder_id"))


async def find_folder(conn: AsyncConnection, inbox_id: str, name: str) -> Folder | None:
    row = (await conn.execute(_BY_NAME, {"inbox_id": inbox_id, "name": name})).first()
    return None if row is None else folder_of(row)


async def get_folder(conn: AsyncConnection, folder_id: int) -> Folder:
    row = (await conn.execute(_BY_ID, {"folder_id": folder_id})).first()
    if row is None:
        raise FolderMissing(str(folder_id))
    return folder_of(row)


def parents(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


async def _next_uidvalidity(conn: AsyncConnection, inbox_id: str, now: datetime) -> int:
    highest = await conn.scalar(
        select(func.max(m.folders.c.uidvalidity)).where(m.folders.c.inbox_id == inbox_id)
    )
    return min(max(int(now.timestamp()), (highest or 0) + 1), MAX_UIDVALIDITY)


async def create_folder(
    conn: AsyncConnection,
    *,
    inbox_id: str,
    name: str,
    now: datetime,
    special_use: str | None = None,
) -> Folder:
    """Create ``name`` and any missing parent (RFC 3501 §6.3.3). Raises :class:`FolderExists`."""
    if await find_folder(conn, inbox_id, name) is not None:
        raise FolderExists(name)
    for parent in parents(name):
        if await find_folder(conn, inbox_id, parent) is None:
            await insert_folder(conn, inbox_id, parent, None, now)
    return await insert_folder(conn, inbox_id, name, special_use, now)


async def insert_folder(
    conn: AsyncConnection, inbox_id: str, name: str, special_use: str | None, now: datetime
) -> Folder:
    row = (
        await conn.execute(
            insert(m.folders)
            .values(
                inbox_id=inbox_id,
                name=name,
                special_use=special_use,
                uidvalidity=await _next_uidvalidity(conn, inbox_id, now),
                uidnext=1,
                highestmodseq=1,
                subscribed=True,
                created_at=now,
            )
            .returning(*m.folders.c)
        )
    ).one()
    return folder_of(row)


async def set_subscribed(conn: AsyncConnection, *, folder_id: int, subscribed: bool) -> None:
    await conn.execute(
        update(m.folders).where(m.folders.c.id == folder_id).values(subscribed=subscribed)
    )


async def folder_status(conn: AsyncConnection, folder_id: int) -> FolderStatus:
    e = m.entries.c
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(_as_int(~e.seen)), 0),
                func.coalesce(func.sum(_as_int(e.deleted)), 0),
                func.coalesce(func.sum(m.messages.c.size), 0),
            )
            .select_from(m.entries.join(m.messages, m.messages.c.id == e.message_id))
            .where(e.folder_id == folder_id)
        )
    ).one()
    return FolderStatus(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def _as_int(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


async def lock_folders(conn: AsyncConnection, folder_ids: Sequence[int]) -> dict[int, Folder]:
    """Lock folder rows in id order (no deadlocks between two-folder operations)."""
    rows = await conn.execute(
        select(m.folders)
        .where(m.folders.c.id.in_(sorted(set(folder_ids))))
        .order_by(m.folders.c.id)
        .with_for_update()
    )
    folders = {row.id: folder_of(row) for row in rows}
    missing = set(folder_ids) - set(folders)
    if missing:
        raise FolderMissing(str(min(missing)))
    return folders
