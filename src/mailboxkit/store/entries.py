"""Entries, the messages of a folder as IMAP sees them, read: an entry's UID, MODSEQ, flags
and keywords; a folder's entries at SELECT; what changed since a MODSEQ (CONDSTORE,
QRESYNC); what FETCH needs of them and the rows SEARCH matches.

Every function runs in the caller's transaction. Changing entries is ``mailboxes``; folders
themselves are ``folders``.

Implementation notes (invariants, on top of those in ``models``):

- Changes commit in MODSEQ order per folder (``mailboxes`` changes a folder's entries with
  its row locked and bumps ``folders.highestmodseq`` once a change): a reader that first
  reads ``highestmodseq`` as ``H`` then sees every change up to ``H`` (see
  :func:`changes_since`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Text,
    bindparam,
    cast,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.folders import Folder, FolderMissing, get_folder

_RUNS_PER_QUERY = 500


class SystemFlag(StrEnum):
    """RFC 3501 §2.3.2 system flags stored as entry columns (``\\Recent`` is not stored)."""

    SEEN = "\\Seen"
    ANSWERED = "\\Answered"
    FLAGGED = "\\Flagged"
    DELETED = "\\Deleted"
    DRAFT = "\\Draft"


_SYSTEM_FLAGS = tuple(SystemFlag)

FLAG_COLUMN = {
    SystemFlag.SEEN: "seen",
    SystemFlag.ANSWERED: "answered",
    SystemFlag.FLAGGED: "flagged",
    SystemFlag.DELETED: "deleted",
    SystemFlag.DRAFT: "draft",
}
"""The ``entries`` column of each system flag."""


class EntryFlags(NamedTuple):
    """One message in a folder: its UID, MODSEQ, system flags and keywords.

    A named tuple, not a frozen dataclass: SELECT and FETCH 1:* make one per message, and a
    frozen dataclass takes three times as long to make (a fifth of a SELECT of 10,000).
    """

    uid: int
    modseq: int
    flags: frozenset[SystemFlag] = frozenset()
    keywords: tuple[str, ...] = ()

    def imap_flags(self) -> tuple[str, ...]:
        """System flags in a fixed order, then keywords."""
        return imap_flags(self.flags, self.keywords)


def imap_flags(flags: frozenset[SystemFlag], keywords: tuple[str, ...]) -> tuple[str, ...]:
    """System flags in a fixed order, then keywords."""
    return (*(f.value for f in _SYSTEM_FLAGS if f in flags), *keywords)


@dataclass(frozen=True, slots=True)
class EntryContent:
    """What FETCH needs of an entry besides its bytes."""

    entry: EntryFlags
    message_id: str
    internal_date: datetime
    size: int
    raw_key: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A folder and every entry in it, ascending by UID (SELECT)."""

    folder: Folder
    entries: tuple[EntryFlags, ...]


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What happened in a folder since a MODSEQ, up to ``highestmodseq``."""

    highestmodseq: int
    updated: tuple[EntryFlags, ...]  # changed entries with a UID at or below ``last_uid``
    added: tuple[EntryFlags, ...]  # entries above ``last_uid``, ascending
    expunged: tuple[int, ...]  # UIDs, ascending


_ENTRY_COLUMNS = (
    m.entries.c.uid,
    m.entries.c.modseq,
    m.entries.c.seen,
    m.entries.c.answered,
    m.entries.c.flagged,
    m.entries.c.deleted,
    m.entries.c.draft,
    # As JSON text, decoded by _entry: most entries have no keywords ("[]"), and decoding that
    # 10,000 times was a sixth of a FETCH 1:* (FLAGS).
    cast(m.entries.c.keywords, Text),
)


_FLAG_SETS = tuple(
    frozenset(flag for bit, flag in enumerate(FLAG_COLUMN) if mask >> bit & 1)
    for mask in range(1 << len(FLAG_COLUMN))
)
"""Every set of system flags, by bit mask in ``FLAG_COLUMN`` order (one per row is too slow
for a FETCH 1:* of a large folder)."""


def _entry(row: Any) -> EntryFlags:
    """The entry of a row that starts with ``_ENTRY_COLUMNS`` (read by position: fast)."""
    uid, modseq, seen, answered, flagged, deleted, draft, keywords = row[:8]
    mask = seen + 2 * answered + 4 * flagged + 8 * deleted + 16 * draft
    listed = () if keywords in (None, "[]") else tuple(json.loads(keywords))
    return EntryFlags(uid, modseq, _FLAG_SETS[mask], listed)


def entry_of(row: Any) -> EntryFlags:
    """The entry of a row of any ``entries`` columns."""
    mask = row.seen + 2 * row.answered + 4 * row.flagged + 8 * row.deleted + 16 * row.draft
    keywords = row.keywords
    return EntryFlags(row.uid, row.modseq, _FLAG_SETS[mask], tuple(keywords) if keywords else ())


def uid_runs(uids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted UIDs as inclusive runs: ``[1, 2, 3, 7]`` -> ``[(1, 3), (7, 7)]``."""
    runs: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if runs and uid == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    return runs


def uid_batches(uids: Iterable[int]) -> Iterator[ColumnElement[bool]]:
    """Conditions on ``entries.uid`` covering ``uids``, a bounded number of runs each."""
    runs = uid_runs(uids)
    for start in range(0, len(runs), _RUNS_PER_QUERY):
        yield or_(
            *(
                m.entries.c.uid == low if low == high else m.entries.c.uid.between(low, high)
                for low, high in runs[start : start + _RUNS_PER_QUERY]
            )
        )


async def snapshot(conn: AsyncConnection, folder_id: int) -> Snapshot:
    """The folder and its entries as of one moment (SELECT, RFC 3501 §6.3.1)."""
    folder = await get_folder(conn, folder_id)
    rows = await conn.execute(
        select(*_ENTRY_COLUMNS)
        .where(m.entries.c.folder_id == folder_id, m.entries.c.uid < folder.uidnext)
        .order_by(m.entries.c.uid)
    )
    return Snapshot(folder, tuple(_entry(r) for r in rows))


async def changes_since(
    conn: AsyncConnection, folder_id: int, *, modseq: int, last_uid: int
) -> FolderChanges:
    """Changes after ``modseq`` for a reader that knows the UIDs up to ``last_uid``.

    One statement, so one snapshot: the folder's ``highestmodseq`` bounds the updates and
    expunges read beside it (see the module notes). New entries are every UID above
    ``last_uid``, whatever their MODSEQ, so none is skipped when it changed again. Raises
    :class:`~mailboxkit.store.folders.FolderMissing`.
    """
    params = {"folder_id": folder_id, "modseq": modseq, "last_uid": last_uid}
    rows = (await conn.execute(_CHANGES, params)).all()
    if not rows or rows[0][0] != _FOLDER:
        raise FolderMissing(str(folder_id))
    updated: list[EntryFlags] = []
    added: list[EntryFlags] = []
    expunged: list[int] = []
    for row in rows[1:]:
        if row[0] == _UPDATED:
            updated.append(_entry(row[1:]))
        elif row[0] == _ADDED:
            added.append(_entry(row[1:]))
        else:
            expunged.append(row[1])
    return FolderChanges(rows[0][2], tuple(updated), tuple(added), tuple(expunged))


_FOLDER, _UPDATED, _ADDED, _EXPUNGED = range(4)


def _changes_query() -> Any:
    """The rows of :func:`changes_since`, ``(kind, *_ENTRY_COLUMNS)``: first the folder's
    (``kind`` ``_FOLDER``: its UIDNEXT and HIGHESTMODSEQ), then by kind and UID."""
    f, e, x = m.folders.c, m.entries.c, m.folder_expunges.c
    folder_id = bindparam("folder_id", type_=BigInteger)
    modseq = bindparam("modseq", type_=BigInteger)
    last_uid = bindparam("last_uid", type_=BigInteger)
    top = select(f.highestmodseq).where(f.id == folder_id).scalar_subquery()
    blanks = [null().cast(c.type) for c in _ENTRY_COLUMNS[2:]]
    kind = literal_column(str(_FOLDER), Integer).label("kind")
    return union_all(
        select(kind, f.uidnext.label("uid"), f.highestmodseq.label("modseq"), *blanks).where(
            f.id == folder_id
        ),
        select(literal_column(str(_UPDATED), Integer), *_ENTRY_COLUMNS).where(
            e.folder_id == folder_id, e.uid <= last_uid, e.modseq > modseq, e.modseq <= top
        ),
        select(literal_column(str(_ADDED), Integer), *_ENTRY_COLUMNS).where(
            e.folder_id == folder_id, e.uid > last_uid
        ),
        select(literal_column(str(_EXPUNGED), Integer), x.uid, x.modseq, *blanks).where(
            x.folder_id == folder_id, x.modseq > modseq, x.modseq <= top, x.uid <= last_uid
        ),
    ).order_by("kind", "uid")


_CHANGES = _changes_query()


async def changed_entries(
    conn: AsyncConnection, folder_id: int, *, modseq: int, uids: Iterable[int]
) -> list[EntryFlags]:
    """Entries among ``uids`` changed after ``modseq`` (CHANGEDSINCE, RFC 7162 §3.1.4)."""
    found: list[EntryFlags] = []
    for condition in uid_batches(uids):
        rows = await conn.execute(
            select(*_ENTRY_COLUMNS).where(
                m.entries.c.folder_id == folder_id, m.entries.c.modseq > modseq, condition
            )
        )
        found.extend(_entry(r) for r in rows)
    return sorted(found, key=lambda entry: entry.uid)


async def expunged_since(conn: AsyncConnection, folder_id: int, *, modseq: int) -> list[int]:
    """UIDs expunged after ``modseq`` (QRESYNC VANISHED (EARLIER), RFC 7162 §3.2.5)."""
    x = m.folder_expunges.c
    rows = await conn.execute(
        select(x.uid).where(x.folder_id == folder_id, x.modseq > modseq).order_by(x.uid)
    )
    return list(rows.scalars())


async def entry_contents(
    conn: AsyncConnection, folder_id: int, uids: Iterable[int]
) -> list[EntryContent]:
    """Entries with their message's size, blob key and internal date, ascending by UID."""
    e, msg = m.entries.c, m.messages.c
    found: list[EntryContent] = []
    for condition in uid_batches(uids):
        rows = await conn.execute(
            select(*_ENTRY_COLUMNS, e.message_id, e.internal_date, msg.size, msg.raw_key)
            .select_from(m.entries.join(m.messages, msg.id == e.message_id))
            .where(e.folder_id == folder_id, condition)
        )
        found.extend(
            EntryContent(_entry(r), r.message_id, r.internal_date, r.size, r.raw_key) for r in rows
        )
    return sorted(found, key=lambda content: content.entry.uid)


async def select_entries(
    conn: AsyncConnection,
    folder_id: int,
    columns: Sequence[Any],
    conditions: Sequence[ColumnElement[bool]],
    *,
    last_uid: int,
) -> list[Any]:
    """Rows of ``columns`` (of ``entries`` joined with ``messages``) for the folder's entries
    up to ``last_uid`` that meet every condition, ascending by UID (IMAP SEARCH)."""
    e = m.entries.c
    rows = await conn.execute(
        select(*columns)
        .select_from(m.entries.join(m.messages, m.messages.c.id == e.message_id))
        .where(e.folder_id == folder_id, e.uid <= last_uid, *conditions)
        .order_by(e.uid)
    )
    return list(rows)
