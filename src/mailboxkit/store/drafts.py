"""Drafts: mail being written, its copy in the Drafts folder, and scheduled sending.

Implementation notes (see the ``drafts`` table in ``models``):

- A draft's fields are :class:`DraftContent`; its copy in the inbox's Drafts folder (flags
  ``\\Seen \\Draft``) is what IMAP clients see. The caller composes and stages the copy
  (``outbox.stage``); :func:`create_draft` and :func:`update_draft` store it here. An update
  stores a new copy (a new UID) and expunges the old one, as IMAP clients do themselves.
- Attachments are kept by their content: ``att/<sha256>``, the blob the copy's attachment rows
  name, so the store sweep keeps them while the draft exists.
- The row follows its copy: expunging the entry (an IMAP client deleting or replacing the
  draft, or deleting the folder) deletes the row (``ON DELETE CASCADE`` on ``entry_id``). A
  draft appended over IMAP to Drafts with ``\\Draft`` gets a row too
  (:func:`record_appended`), so the API lists it.
- Sending is :class:`SendDraft`, a queue hook: in the transaction that queues the message, a
  conditional update on ``status`` and ``version`` takes the draft (so a draft is queued at most
  once, whoever sends it: the API, or scheduler processes racing on PostgreSQL), then its copy
  is expunged and the original of a reply is marked ``\\Answered``. An update in between moves
  ``version`` on: the send that composed the old content is refused and queues nothing.
- Scheduled drafts are claimed by a scheduler process for a short lease (:func:`claim_due`,
  ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL), which only shares the work out; the
  conditional update above is what makes it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, Scope
from mailboxkit.store.answered import Answer, mark_original
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.ids import new_id
from mailboxkit.store.listing import Cursor
from mailboxkit.store.mailboxes import remove_entries, set_entry_flags
from mailboxkit.store.messages import NewMessage, StoredMessage, insert_messages
from mailboxkit.store.mime import Address, ParsedMessage
from mailboxkit.store.outbox import Queued

DRAFTS = "Drafts"  # the folder every inbox starts with (``accounts.DEFAULT_FOLDERS``)
MAX_HEADERS = 50

RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "dkim-signature",
        "received",
        "return-path",
    }
)
"""Headers the send routes set themselves: a request's ``headers`` may not name them, and a draft
appended over IMAP keeps only its other headers as its extra ones."""


class DraftStatus(StrEnum):
    DRAFT = "draft"  # being written
    SCHEDULED = "scheduled"  # to be sent at ``send_at``
    SENT = "sent"  # queued; the Sent copy is ``sent_message_id``
    FAILED = "failed"  # a scheduled send that could not be queued (``error``)


EDITABLE = frozenset({DraftStatus.DRAFT, DraftStatus.SCHEDULED, DraftStatus.FAILED})


class DraftConflict(Exception):
    """The draft was sent or changed since it was read."""


@dataclass(frozen=True, slots=True)
class DraftAttachment:
    filename: str
    content_type: str
    size: int
    sha256: str
    disposition: str = "attachment"
    content_id: str | None = None

    @property
    def blob_key(self) -> str:
        return f"att/{self.sha256}"


@dataclass(frozen=True, slots=True)
class DraftContent:
    """What a draft sends: addresses as written (``Name <a@b>`` or ``a@b``), threading ids
    without angle brackets."""

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    labels: tuple[str, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[DraftAttachment, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc),
            "reply_to": list(self.reply_to),
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "headers": [list(h) for h in self.headers],
            "labels": list(self.labels),
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "sha256": a.sha256,
                    "disposition": a.disposition,
                    "content_id": a.content_id,
                }
                for a in self.attachments
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DraftContent:
        return cls(
            to=tuple(data.get("to") or ()),
            cc=tuple(data.get("cc") or ()),
            bcc=tuple(data.get("bcc") or ()),
            reply_to=tuple(data.get("reply_to") or ()),
            subject=str(data.get("subject") or ""),
            text=data.get("text"),
            html=data.get("html"),
            headers=tuple((str(n), str(v)) for n, v in data.get("headers") or ()),
            labels=tuple(data.get("labels") or ()),
            in_reply_to=data.get("in_reply_to"),
            references=tuple(data.get("references") or ()),
            attachments=tuple(DraftAttachment(**a) for a in data.get("attachments") or ()),
        )


def _written(addresses: Sequence[Address]) -> tuple[str, ...]:
    return tuple(f"{a.name} <{a.email}>" if a.name else a.email for a in addresses if a.email)


def content_of(
    parsed: ParsedMessage,
    *,
    labels: Sequence[str] = (),
    reserved: frozenset[str] = RESERVED_HEADERS,
) -> DraftContent:
    """A draft's content as a stored message shows it (its copy in Drafts): recipients, Bcc
    included, subject, bodies, the extra headers not in ``reserved``, threading ids and
    attachments."""
    extra = tuple((name, value) for name, value in parsed.headers if name.lower() not in reserved)[
        :MAX_HEADERS
    ]
    return DraftContent(
        to=_written(parsed.to),
        cc=_written(parsed.cc),
        bcc=_written(parsed.bcc),
        reply_to=_written(parsed.reply_to),
        subject=parsed.subject,
        text=parsed.text,
        html=parsed.html,
        headers=extra,
        labels=tuple(labels),
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        attachments=tuple(
            DraftAttachment(
                a.filename or "attachment",
                a.content_type,
                a.size,
                a.sha256,
                a.disposition,
                a.content_id,
            )
            for a in parsed.attachments
        ),
    )


@dataclass(frozen=True, slots=True)
class DraftRecord:
    id: str
    account_id: str
    inbox_id: str
    status: DraftStatus
    version: int
    content: DraftContent
    created_at: datetime
    updated_at: datetime
    message_id: str | None = None  # the copy in Drafts, while unsent
    reply_to_message_id: str | None = None
    send_at: datetime | None = None
    error: str | None = None
    sent_message_id: str | None = None
    thread_id: str | None = None
    sent_at: datetime | None = None


def _record(row: Any) -> DraftRecord:
    return DraftRecord(
        id=row.id,
        account_id=row.account_id,
        inbox_id=row.inbox_id,
        status=DraftStatus(row.status),
        version=int(row.version),
        content=DraftContent.from_json(row.content or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        message_id=row.message_id,
        reply_to_message_id=row.reply_to_message_id,
        send_at=row.send_at,
        error=row.error,
        sent_message_id=row.sent_message_id,
        thread_id=row.thread_id,
        sent_at=row.sent_at,
    )


# --- reading ------------------------------------------------------------------------------


async def get_draft(conn: AsyncConnection, inbox_id: str, draft_id: str) -> DraftRecord | None:
    """One draft of an inbox (the caller has checked the inbox's scope)."""
    d = m.drafts.c
    row = (
        await conn.execute(select(m.drafts).where(d.inbox_id == inbox_id, d.id == draft_id))
    ).first()
    return None if row is None else _record(row)


def _in_scope(scope: Scope) -> ColumnElement[bool]:
    d = m.drafts.c
    condition = d.account_id == scope.account_id
    if scope.inbox_id is not None:
        condition = and_(condition, d.inbox_id == scope.inbox_id)
    return condition


async def list_drafts(
    conn: AsyncConnection,
    scope: Scope,
    *,
    inbox_id: str | None,
    statuses: Sequence[DraftStatus],
    limit: int,
    cursor: Cursor | None = None,
) -> tuple[list[DraftRecord], Cursor | None]:
    """One page of drafts, newest first, and the cursor of the next page."""
    d = m.drafts.c
    query = select(m.drafts).where(_in_scope(scope), d.status.in_([s.value for s in statuses]))
    if inbox_id is not None:
        query = query.where(d.inbox_id == inbox_id)
    if cursor is not None:
        query = query.where(
            or_(d.created_at < cursor.at, and_(d.created_at == cursor.at, d.id < cursor.id))
        )
    query = query.order_by(d.created_at.desc(), d.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    records = [_record(r) for r in rows[:limit]]
    more = len(rows) > limit and records
    return records, (Cursor(records[-1].created_at, records[-1].id) if more else None)


# --- the copy in Drafts ---------------------------------------------------------------------


async def _store_copy(conn: AsyncConnection, copy: NewMessage) -> tuple[StoredMessage, int]:
    """Store the copy in Drafts with ``\\Seen \\Draft``; the stored row and its entry's id. A
    draft is not mail sent: it records no event and joins no thread (the message sent does)."""
    [stored] = await insert_messages(conn, [replace(copy, silent=True, threaded=False)])
    await set_entry_flags(
        conn,
        folder_id=stored.folder_id,
        uid=stored.uid,
        flags=[SystemFlag.SEEN, SystemFlag.DRAFT],
        keywords=(),
    )
    return stored, await _entry_id(conn, stored.folder_id, stored.uid)


async def _entry_id(conn: AsyncConnection, folder_id: int, uid: int) -> int:
    e = m.entries.c
    found = await conn.scalar(select(e.id).where(e.folder_id == folder_id, e.uid == uid))
    assert found is not None
    return int(found)


async def _expunge_entry(conn: AsyncConnection, entry_id: int | None) -> None:
    if entry_id is None:
        return
    row = (
        await conn.execute(
            select(m.entries.c.folder_id, m.entries.c.uid).where(m.entries.c.id == entry_id)
        )
    ).first()
    if row is not None:
        await remove_entries(conn, folder_id=int(row.folder_id), uids=[int(row.uid)])


# --- writing ------------------------------------------------------------------------------


def status_for(send_at: datetime | None) -> DraftStatus:
    return DraftStatus.DRAFT if send_at is None else DraftStatus.SCHEDULED


async def create_draft(
    conn: AsyncConnection,
    *,
    inbox: Inbox,
    content: DraftContent,
    copy: NewMessage,
    now: datetime,
    send_at: datetime | None = None,
    reply_to_message_id: str | None = None,
) -> DraftRecord:
    """A new draft with its copy in Drafts (``copy``'s blobs are staged)."""
    stored, entry_id = await _store_copy(conn, copy)
    draft_id = await _insert_draft(
        conn, inbox, stored.id, entry_id, content, now, send_at, reply_to_message_id
    )
    found = await get_draft(conn, inbox.id, draft_id)
    assert found is not None
    return found


async def update_draft(
    conn: AsyncConnection,
    draft: DraftRecord,
    *,
    content: DraftContent,
    copy: NewMessage,
    send_at: datetime | None,
    now: datetime,
) -> DraftRecord:
    """Replace the content of ``draft`` as read (its ``version``): a new copy in Drafts, the old
    one expunged. Raises :class:`DraftConflict` when it was sent or changed meanwhile."""
    d = m.drafts.c
    row = (await conn.execute(_editable(draft.id, draft.version).with_for_update())).first()
    if row is None:
        raise DraftConflict(draft.id)
    stored, entry_id = await _store_copy(conn, copy)
    await conn.execute(
        update(m.drafts)
        .where(d.id == draft.id)
        .values(
            status=status_for(send_at).value,
            version=d.version + 1,
            entry_id=entry_id,
            message_id=stored.id,
            content=content.to_json(),
            send_at=send_at,
            claimed_until=None,
            error=None,
            updated_at=now,
        )
    )
    await _expunge_entry(conn, row.entry_id)
    found = await get_draft(conn, draft.inbox_id, draft.id)
    assert found is not None
    return found


def _editable(draft_id: str, version: int) -> Any:
    d = m.drafts.c
    return select(m.drafts).where(
        d.id == draft_id,
        d.version == version,
        d.status.in_([s.value for s in EDITABLE]),
    )


async def delete_draft(conn: AsyncConnection, inbox_id: str, draft_id: str) -> bool:
    """Delete a draft and expunge its copy (a sent draft: only the row); whether it was there."""
    d = m.drafts.c
    row = (
        await conn.execute(
            select(d.entry_id).where(d.inbox_id == inbox_id, d.id == draft_id).with_for_update()
        )
    ).first()
    if row is None:
        return False
    await conn.execute(delete(m.drafts).where(d.id == draft_id))
    await _expunge_entry(conn, row.entry_id)
    return True


async def record_appended(
    conn: AsyncConnection,
    *,
    inbox: Inbox,
    stored: StoredMessage,
    parsed: ParsedMessage,
    now: datetime,
) -> str:
    """A draft for a message an IMAP client appended to Drafts with ``\\Draft``; its id."""
    original = None
    if parsed.in_reply_to:
        original = await conn.scalar(
            select(m.messages.c.id)
            .where(
                m.messages.c.inbox_id == inbox.id,
                m.messages.c.message_id_header == parsed.in_reply_to,
                m.messages.c.id != stored.id,
            )
            .limit(1)
        )
    entry_id = await _entry_id(conn, stored.folder_id, stored.uid)
    return await _insert_draft(
        conn, inbox, stored.id, entry_id, content_of(parsed), now, None, original
    )


async def _insert_draft(
    conn: AsyncConnection,
    inbox: Inbox,
    message_id: str,
    entry_id: int,
    content: DraftContent,
    now: datetime,
    send_at: datetime | None,
    reply_to_message_id: str | None,
) -> str:
    """The row of a new draft whose copy in Drafts is ``message_id`` at ``entry_id``; its id."""
    draft_id = new_id()
    await conn.execute(
        m.drafts.insert().values(
            id=draft_id,
            account_id=inbox.account_id,
            inbox_id=inbox.id,
            status=status_for(send_at).value,
            version=1,
            entry_id=entry_id,
            message_id=message_id,
            reply_to_message_id=reply_to_message_id,
            content=content.to_json(),
            send_at=send_at,
            created_at=now,
            updated_at=now,
        )
    )
    return draft_id


# --- sending ------------------------------------------------------------------------------


class SendDraft:
    """The queue hook that sends a draft (module notes). ``due``: only if scheduled and due at
    ``now`` (the scheduler's send); else in any unsent status (the API's). One per send."""

    def __init__(self, draft_id: str, version: int, now: datetime, *, due: bool = False) -> None:
        self.draft_id = draft_id
        self.version = version
        self.now = now
        self.due = due
        self._taken: tuple[int | None, str | None] = (None, None)  # entry, original

    async def claim(self, conn: AsyncConnection) -> bool:
        d = m.drafts.c
        query = _editable(self.draft_id, self.version)
        if self.due:
            query = query.where(d.status == DraftStatus.SCHEDULED.value, d.send_at <= self.now)
        row = (await conn.execute(query.with_for_update())).first()
        if row is None:
            return False
        self._taken = (row.entry_id, row.reply_to_message_id)
        await conn.execute(
            update(m.drafts)
            .where(d.id == self.draft_id)
            .values(
                status=DraftStatus.SENT.value,
                version=d.version + 1,
                entry_id=None,
                message_id=None,
                claimed_until=None,
                error=None,
                sent_at=self.now,
                updated_at=self.now,
            )
        )
        return True

    async def queued(self, conn: AsyncConnection, queued: Queued) -> None:
        entry_id, original = self._taken
        await conn.execute(
            update(m.drafts)
            .where(m.drafts.c.id == self.draft_id)
            .values(sent_message_id=queued.message_id, thread_id=queued.thread_id)
        )
        await _expunge_entry(conn, entry_id)
        if original is not None:
            await mark_original(conn, original, Answer.REPLY)


async def claim_due(
    conn: AsyncConnection, *, now: datetime, until: datetime, limit: int
) -> list[DraftRecord]:
    """Scheduled drafts due at ``now`` that no other scheduler holds, held until ``until``."""
    d = m.drafts.c
    query = (
        select(d.id)
        .where(
            d.status == DraftStatus.SCHEDULED.value,
            d.send_at <= now,
            or_(d.claimed_until.is_(None), d.claimed_until <= now),
        )
        .order_by(d.send_at, d.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list((await conn.scalars(query)).all())
    if not ids:
        return []
    await conn.execute(update(m.drafts).where(d.id.in_(ids)).values(claimed_until=until))
    rows = await conn.execute(select(m.drafts).where(d.id.in_(ids)).order_by(d.send_at, d.id))
    return [_record(r) for r in rows]


async def release_claims(conn: AsyncConnection) -> int:
    """Let go of every scheduler's hold (SQLite at start: this process is the only one)."""
    d = m.drafts.c
    result = await conn.execute(
        update(m.drafts).where(d.claimed_until.is_not(None)).values(claimed_until=None)
    )
    return int(result.rowcount or 0)


async def next_send_at(conn: AsyncConnection) -> datetime | None:
    """When the next scheduled draft is due."""
    d = m.drafts.c
    found: datetime | None = await conn.scalar(
        select(d.send_at)
        .where(d.status == DraftStatus.SCHEDULED.value)
        .order_by(d.send_at)
        .limit(1)
    )
    return found


async def fail_draft(
    conn: AsyncConnection, draft: DraftRecord, *, error: str, now: datetime
) -> bool:
    """Mark a scheduled draft that could not be queued (as read: its ``version``)."""
    d = m.drafts.c
    result = await conn.execute(
        update(m.drafts)
        .where(
            d.id == draft.id,
            d.version == draft.version,
            d.status == DraftStatus.SCHEDULED.value,
        )
        .values(
            status=DraftStatus.FAILED.value,
            version=d.version + 1,
            claimed_until=None,
            error=error[:1000],
            updated_at=now,
        )
    )
    return bool(result.rowcount)
