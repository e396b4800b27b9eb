"""Messages: storing a parsed message into an inbox folder, with its entry, attachments,
thread and ``message.received``/``message.sent`` event (none for a ``silent`` copy), all in the
caller's transaction.

The caller stages every blob (raw bytes, attachments) durably *before* calling, and publishes
the returned events only *after* commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.codes import find_codes_and_links
from mailboxkit.store.events import Event, EventType, NewEvent, record_events
from mailboxkit.store.ids import new_id
from mailboxkit.store.mime import Address, ParsedMessage
from mailboxkit.store.quota import charge
from mailboxkit.store.threads import MAX_ID_LENGTH, ThreadRequest, assign_threads


class FolderNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message ready to be stored: parsed, its blobs already durable."""

    inbox: Inbox
    parsed: ParsedMessage
    raw_key: str
    size: int
    received_at: datetime
    attachment_keys: Sequence[str]  # one per parsed.attachments, same order
    direction: str = "inbound"
    folder: str = "INBOX"
    envelope_from: str = ""
    envelope_to: Sequence[str] = ()
    seen: bool = False
    auth: dict[str, Any] | None = None
    event: EventType | None = None  # default: message.received, or message.sent if outbound
    silent: bool = False  # a copy (in Sent, in Drafts): no mail came or went, no event
    threaded: bool = True  # False for a draft's copy: not part of a conversation until sent


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    thread_id: str | None  # None for a draft's copy
    folder_id: int
    uid: int
    modseq: int
    events: tuple[Event, ...] = field(default=())


def address_json(addresses: Sequence[Address]) -> list[dict[str, str]]:
    return [{"name": a.name, "email": a.email} for a in addresses]


def _header_id(value: str | None) -> str | None:
    return value if value is None or len(value) <= MAX_ID_LENGTH else None


@dataclass(frozen=True, slots=True)
class SentCopy:
    uid: int
    has_bcc: bool  # whether the copy keeps a Bcc field (submission keeps the sender's)


async def sent_copies(
    conn: AsyncConnection, inbox_id: str, folder_id: int, message_ids: Sequence[str]
) -> dict[str, SentCopy]:
    """The inbox's outbound messages in folder ``folder_id`` with these Message-IDs: the
    copies this server filed in Sent when it sent them, by Message-ID."""
    wanted = {i for i in message_ids if _header_id(i) is not None}
    if not wanted:
        return {}
    msg, entry = m.messages.c, m.entries.c
    rows = await conn.execute(
        select(msg.message_id_header, entry.uid, msg.headers)
        .join(m.entries, entry.message_id == msg.id)
        .where(
            msg.inbox_id == inbox_id,
            msg.message_id_header.in_(sorted(wanted)),
            msg.direction == "outbound",
            entry.folder_id == folder_id,
        )
        .order_by(entry.uid)
    )
    found: dict[str, SentCopy] = {}
    for message_id, uid, headers in rows:
        has_bcc = any(name.lower() == "bcc" for name, _ in headers)
        found.setdefault(message_id, SentCopy(int(uid), has_bcc))
    return found


_folder = m.folders.c
_ALLOCATE_UIDS = (
    update(m.folders)
    .where(_folder.inbox_id == bindparam("in_inbox"), _folder.name == bindparam("in_folder"))
    .values(
        uidnext=_folder.uidnext + bindparam("count"),
        highestmodseq=_folder.highestmodseq + bindparam("count"),
    )
    .returning(_folder.id, _folder.uidnext, _folder.highestmodseq)
)


async def allocate_uids(
    conn: AsyncConnection, inbox_id: str, folder: str, count: int = 1
) -> tuple[int, int, int]:
    """Reserve ``count`` UIDs and MODSEQs of a folder: (folder_id, first uid, first modseq).

    The row update holds the folder's lock until commit, so UIDs become visible in order.
    """
    params = {"in_inbox": inbox_id, "in_folder": folder, "count": count}
    row = (await conn.execute(_ALLOCATE_UIDS, params)).first()
    if row is None:
        raise FolderNotFound(f"{inbox_id}/{folder}")
    return row.id, row.uidnext - count, row.highestmodseq - count + 1


def message_summary(message_id: str, thread_id: str | None, new: NewMessage) -> dict[str, Any]:
    """The thin description of a message that events carry (never attachment bytes): with
    its SPF/DKIM/DMARC verdicts, and the one-time codes and links found in it."""
    p = new.parsed
    return {
        "message_id": message_id,
        "inbox_id": new.inbox.id,
        "thread_id": thread_id,
        "from": None if p.from_ is None else {"name": p.from_.name, "email": p.from_.email},
        "to": address_json(p.to),
        "cc": address_json(p.cc),
        "subject": p.subject,
        "preview": p.preview,
        "extracted_text": p.extracted_text,
        "received_at": new.received_at.isoformat(),
        "size": new.size,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in p.attachments
        ],
        "auth": new.auth,
        **find_codes_and_links(p.subject, p.text, p.html).as_dict(),
    }


def _message_row(message_id: str, thread_id: str | None, new: NewMessage) -> dict[str, Any]:
    p = new.parsed
    return {
        "id": message_id,
        "inbox_id": new.inbox.id,
        "thread_id": thread_id,
        "direction": new.direction,
        "raw_key": new.raw_key,
        "size": new.size,
        "received_at": new.received_at,
        "envelope_from": new.envelope_from,
        "envelope_to": list(new.envelope_to),
        "message_id_header": _header_id(p.message_id),
        "in_reply_to": _header_id(p.in_reply_to),
        "reference_ids": [r for r in p.references if len(r) <= MAX_ID_LENGTH],
        "subject": p.subject,
        "from_name": p.from_.name if p.from_ else "",
        "from_email": p.from_.email if p.from_ else "",
        "to_addrs": address_json(p.to),
        "cc_addrs": address_json(p.cc),
        "reply_to_addrs": address_json(p.reply_to),
        "sent_at": p.date,
        "headers": [list(h) for h in p.headers],
        "text": p.text,
        "html": p.html,
        "extracted_text": p.extracted_text,
        "preview": p.preview,
        "has_attachments": bool(p.attachments),
        "auth": new.auth,
    }


def _attachment_rows(message_id: str, new: NewMessage) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id(),
            "message_id": message_id,
            "position": i,
            "filename": a.filename,
            "content_type": a.content_type,
            "disposition": a.disposition,
            "content_id": a.content_id,
            "size": a.size,
            "sha256": a.sha256,
            "blob_key": key,
        }
        for i, (a, key) in enumerate(zip(new.parsed.attachments, new.attachment_keys, strict=True))
    ]


async def insert_messages(conn: AsyncConnection, news: Sequence[NewMessage]) -> list[StoredMessage]:
    """Store messages in their folders, in order, with a handful of statements per batch.

    Each entry counts its message's size into its account's stored bytes (``store.quota``;
    the account row is locked before any folder). Nothing is refused here: a caller that
    enforces the limit checks with ``quota.lock_accounts`` first."""
    if not news:
        return []
    deltas: dict[str, int] = {}
    for new in news:
        deltas[new.inbox.account_id] = deltas.get(new.inbox.account_id, 0) + new.size
    await charge(conn, deltas)
    threaded = [n for n in news if n.threaded]
    assigned = iter(
        await assign_threads(
            conn, [ThreadRequest(n.inbox.id, n.parsed, n.received_at) for n in threaded]
        )
    )
    thread_ids = [next(assigned) if n.threaded else None for n in news]
    ids = [new_id() for _ in news]
    await conn.execute(
        insert(m.messages),
        [_message_row(i, t, n) for i, t, n in zip(ids, thread_ids, news, strict=True)],
    )
    attachment_rows = [
        row for i, n in zip(ids, news, strict=True) for row in _attachment_rows(i, n)
    ]
    if attachment_rows:
        await conn.execute(insert(m.attachments), attachment_rows)
    by_folder: dict[tuple[str, str], list[int]] = {}
    for index, new in enumerate(news):
        by_folder.setdefault((new.inbox.id, new.folder), []).append(index)
    slots: dict[int, tuple[int, int, int]] = {}
    for (inbox_id, folder), indexes in sorted(by_folder.items()):  # one lock order for all
        folder_id, uid, modseq = await allocate_uids(conn, inbox_id, folder, len(indexes))
        for offset, index in enumerate(indexes):
            slots[index] = (folder_id, uid + offset, modseq + offset)
    await conn.execute(
        insert(m.entries),
        [
            {
                "folder_id": slots[i][0],
                "message_id": ids[i],
                "uid": slots[i][1],
                "modseq": slots[i][2],
                "internal_date": new.received_at,
                "seen": new.seen,
                "keywords": [],
            }
            for i, new in enumerate(news)
        ],
    )
    recorded = iter(
        await record_events(
            conn,
            [
                NewEvent(
                    new.event or _default_event(new),
                    new.inbox.account_id,
                    message_summary(i, t, new),
                    new.received_at,
                    inbox_id=new.inbox.id,
                    message_id=i,
                )
                for i, t, new in zip(ids, thread_ids, news, strict=True)
                if not new.silent
            ],
        )
    )
    return [
        StoredMessage(ids[i], thread_ids[i], *slots[i], () if new.silent else (next(recorded),))
        for i, new in enumerate(news)
    ]


def _default_event(new: NewMessage) -> EventType:
    return EventType.MESSAGE_RECEIVED if new.direction == "inbound" else EventType.MESSAGE_SENT


async def insert_message(conn: AsyncConnection, new: NewMessage) -> StoredMessage:
    [stored] = await insert_messages(conn, [new])
    return stored
