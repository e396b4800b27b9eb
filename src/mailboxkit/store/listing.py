"""Messages as the HTTP API lists and shows them: filters, cursor pages, labels and read state.

Implementation notes:

- Pages are newest first, ordered by ``(received_at, id)`` descending; ``id`` breaks ties, so a
  cursor (the last row's pair) continues exactly where the page ended even when messages keep
  arriving: new ones sort before it.
- A message's *read* state and *labels* come from its IMAP entries (``models`` notes): read when
  any entry has ``\\Seen``, labels the union of the entries' keywords in entry order. A message
  with no entry (all expunged) is unread and has no label. Both come with the message query
  itself, as one JSON aggregate over the message's entries (an index lookup on
  ``ix_entries_message``), so a page costs one round trip to the database, not two.
- Text filters are case-insensitive substring matches, portable across SQLite and PostgreSQL;
  wildcards in the user's text are escaped. Address filters match inside the stored JSON lists.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Scope


class InvalidCursor(ValueError):
    """A page token that this server did not make (or that belongs to another listing)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last row's sort time and id."""

    at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            at, id_ = json.loads(raw)
            when = datetime.fromisoformat(at)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise InvalidCursor(token) from None
        if not isinstance(id_, str) or when.tzinfo is None:
            raise InvalidCursor(token)
        return cls(when, id_)


@dataclass(frozen=True, slots=True)
class MessageFilter:
    before: datetime | None = None
    after: datetime | None = None
    from_: str | None = None
    to: str | None = None
    subject: str | None = None
    label: str | None = None
    unread: bool | None = None
    direction: str | None = None
    q: str | None = None


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    id: str
    message_id: str
    filename: str | None
    content_type: str
    disposition: str
    content_id: str | None
    size: int
    blob_key: str


@dataclass(slots=True)  # not frozen: a listing makes 50 of these, and frozen init is slow
class MessageRecord:
    """A message with its read state and labels; the detail fields are None (or empty) in
    listings."""

    id: str
    inbox_id: str
    thread_id: str | None
    direction: str
    received_at: datetime
    sent_at: datetime | None
    size: int
    subject: str
    from_name: str
    from_email: str
    to: list[dict[str, str]]
    cc: list[dict[str, str]]
    preview: str
    has_attachments: bool
    read: bool
    labels: list[str]
    raw_key: str
    reply_to: list[dict[str, str]] = field(default_factory=list)  # detail only
    message_id_header: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    headers: list[list[str]] | None = None
    text: str | None = None
    html: str | None = None
    extracted_text: str | None = None
    auth: dict[str, Any] | None = None
    attachments: list[AttachmentRecord] = field(default_factory=list)


SUMMARY_COLUMNS = (  # then _extras_column; _summary reads them by position
    m.messages.c.id,
    m.messages.c.inbox_id,
    m.messages.c.thread_id,
    m.messages.c.direction,
    m.messages.c.received_at,
    m.messages.c.sent_at,
    m.messages.c.size,
    m.messages.c.subject,
    m.messages.c.from_name,
    m.messages.c.from_email,
    m.messages.c.preview,
    m.messages.c.has_attachments,
    m.messages.c.raw_key,
)
DETAIL_COLUMNS = (
    m.messages.c.reply_to_addrs,
    m.messages.c.message_id_header,
    m.messages.c.in_reply_to,
    m.messages.c.reference_ids,
    m.messages.c.headers,
    m.messages.c.text,
    m.messages.c.html,
    m.messages.c.extracted_text,
    m.messages.c.auth,
)


def _json_text(column: Any) -> Any:
    return cast(column, Text)


def _conditions(f: MessageFilter) -> list[ColumnElement[bool]]:
    c = m.messages.c
    out: list[ColumnElement[bool]] = []
    if f.before is not None:
        out.append(c.received_at < f.before)
    if f.after is not None:
        out.append(c.received_at > f.after)
    if f.from_:
        out.append(
            or_(
                c.from_email.icontains(f.from_, autoescape=True),
                c.from_name.icontains(f.from_, autoescape=True),
            )
        )
    if f.to:
        out.append(
            or_(
                _json_text(c.to_addrs).icontains(f.to, autoescape=True),
                _json_text(c.cc_addrs).icontains(f.to, autoescape=True),
                _json_text(c.envelope_to).icontains(f.to, autoescape=True),
            )
        )
    if f.subject:
        out.append(c.subject.icontains(f.subject, autoescape=True))
    if f.q:
        out.append(
            or_(
                c.subject.icontains(f.q, autoescape=True),
                c.text.icontains(f.q, autoescape=True),
            )
        )
    if f.direction:
        out.append(c.direction == f.direction)
    if f.unread is not None:
        seen = exists().where(m.entries.c.message_id == c.id, m.entries.c.seen.is_(True))
        out.append(~seen if f.unread else seen)
    if f.label:
        out.append(
            exists().where(
                m.entries.c.message_id == c.id,
                _json_text(m.entries.c.keywords).contains(json.dumps(f.label), autoescape=True),
            )
        )
    return out


def _extras_column(dialect: str) -> Any:
    """A column for the message query, one JSON value so that a row costs one decode:
    ``[to, cc, flags]``, where flags are ``[[seen, keywords], ...]`` of the message's entries in
    entry order (NULL or ``[]`` without entries). The flags are one correlated aggregate, so
    each row costs one lookup on ``ix_entries_message`` (an EXISTS for ``seen`` would be planned
    by PostgreSQL as a hash of every seen entry of every inbox)."""
    c, e = m.messages.c, m.entries.c
    mine = e.message_id == c.id
    if dialect == "postgresql":
        pair = func.json_build_array(e.seen, e.keywords)
        flags = select(func.json_agg(aggregate_order_by(pair, e.id))).where(mine)
        extras = func.json_build_array(c.to_addrs, c.cc_addrs, flags.scalar_subquery())
    else:
        pair = func.json_array(e.seen, func.json(e.keywords))
        ordered = select(pair.label("pair")).where(mine).order_by(e.id)
        inner = ordered.correlate(m.messages).subquery()
        flags = select(func.json_group_array(func.json(inner.c.pair)))
        extras = func.json_array(
            func.json(c.to_addrs), func.json(c.cc_addrs), func.json(flags.scalar_subquery())
        )
    return type_coerce(extras, JSON).label("extras")


def _summary(row: Any) -> MessageRecord:
    """The record of a row that starts with ``SUMMARY_COLUMNS`` and ``_extras_column``."""
    to, cc, flags = row[13]
    read, labels = False, []
    for seen, keywords in flags or ():
        read = read or bool(seen)
        for keyword in keywords or ():
            if keyword not in labels:
                labels.append(keyword)
    return MessageRecord(
        id=row[0],
        inbox_id=row[1],
        thread_id=row[2],
        direction=row[3],
        received_at=row[4],
        sent_at=row[5],
        size=int(row[6]),
        subject=row[7],
        from_name=row[8],
        from_email=row[9],
        to=to or [],
        cc=cc or [],
        preview=row[10],
        has_attachments=bool(row[11]),
        read=read,
        labels=labels,
        raw_key=row[12],
    )


def _detail(row: Any, attachments: list[AttachmentRecord]) -> MessageRecord:
    """The record of a row of ``SUMMARY_COLUMNS``, ``_extras_column`` and ``DETAIL_COLUMNS``."""
    record = _summary(row)
    reply_to, msgid, in_reply_to, references, headers, text, html, extracted, auth = row[14:]
    record.reply_to = list(reply_to or [])
    record.message_id_header = msgid
    record.in_reply_to = in_reply_to
    record.references = list(references or [])
    record.headers = [list(h) for h in headers or []]
    record.text = text
    record.html = html
    record.extracted_text = extracted
    record.auth = auth
    record.attachments = attachments
    return record


@functools.cache
def _page_query(dialect: str, visible: bool, inbox_key: bool, after: bool) -> Select[Any]:
    """The listing's statement for one shape, with bound parameters ``inbox_id``, ``limit`` and
    ``account_id`` (when ``visible``), ``scope_inbox`` (``inbox_key``), ``at`` and ``after_id``
    (``after``). Built once per shape: its SQL and cache key are then computed once too."""
    c, d = m.messages.c, m.drafts.c
    drafts = select(d.message_id).where(
        d.inbox_id == bindparam("inbox_id"), d.message_id.is_not(None)
    )
    query = select(*SUMMARY_COLUMNS, _extras_column(dialect)).where(
        c.inbox_id == bindparam("inbox_id"), c.id.not_in(drafts)
    )
    if visible:
        inbox = m.inboxes.c
        owned = [inbox.id == bindparam("inbox_id"), inbox.account_id == bindparam("account_id")]
        if inbox_key:
            owned.append(inbox.id == bindparam("scope_inbox"))
        query = query.where(exists().where(*owned))
    if after:
        at = bindparam("at", type_=c.received_at.type)
        query = query.where(
            or_(c.received_at < at, and_(c.received_at == at, c.id < bindparam("after_id")))
        )
    order = (c.received_at.desc(), c.id.desc())
    return query.order_by(*order).limit(bindparam("limit", type_=Integer))


async def list_messages(
    conn: AsyncConnection,
    inbox_id: str,
    filters: MessageFilter,
    *,
    limit: int,
    cursor: Cursor | None = None,
    visible_to: Scope | None = None,
) -> tuple[list[MessageRecord], Cursor | None]:
    """One page of an inbox's messages, newest first, and the cursor of the next page. The
    copies of drafts in Drafts are not listed: they are the drafts' (``store.drafts``), and
    would read as mail sent.

    With ``visible_to``, the inbox's scope is checked in the same query: the page is empty when
    the inbox is not in it. Without it the caller has checked the scope.
    """
    params: dict[str, Any] = {"inbox_id": inbox_id, "limit": limit + 1}
    if visible_to is not None:
        params.update(account_id=visible_to.account_id, scope_inbox=visible_to.inbox_id)
    if cursor is not None:
        params.update(at=cursor.at, after_id=cursor.id)
    query = _page_query(
        conn.dialect.name,
        visible_to is not None,
        visible_to is not None and visible_to.inbox_id is not None,
        cursor is not None,
    )
    conditions = _conditions(filters)
    if conditions:
        query = query.where(*conditions)
    rows = (await conn.execute(query, params)).all()
    records = [_summary(r) for r in rows[:limit]]
    last = records[-1] if records else None
    more = len(rows) > limit and last is not None
    return records, (Cursor(last.received_at, last.id) if more and last else None)


async def attachments_of(
    conn: AsyncConnection, message_ids: Sequence[str]
) -> dict[str, list[AttachmentRecord]]:
    out: dict[str, list[AttachmentRecord]] = {mid: [] for mid in message_ids}
    if not message_ids:
        return out
    a = m.attachments.c
    rows = await conn.execute(
        select(m.attachments)
        .where(a.message_id.in_(list(message_ids)))
        .order_by(a.message_id, a.position)
    )
    for r in rows:
        out[r.message_id].append(
            AttachmentRecord(
                r.id,
                r.message_id,
                r.filename,
                r.content_type,
                r.disposition,
                r.content_id,
                int(r.size),
                r.blob_key,
            )
        )
    return out


async def messages_by(
    conn: AsyncConnection, condition: ColumnElement[bool], *, oldest_first: bool = True
) -> list[MessageRecord]:
    """Full messages matching ``condition`` (the caller scopes it), with attachments."""
    c = m.messages.c
    order = (c.received_at, c.id) if oldest_first else (c.received_at.desc(), c.id.desc())
    rows = (
        await conn.execute(
            select(*SUMMARY_COLUMNS, _extras_column(conn.dialect.name), *DETAIL_COLUMNS)
            .where(condition)
            .order_by(*order)
        )
    ).all()
    files = await attachments_of(conn, [r.id for r in rows])
    return [_detail(r, files.get(r.id, [])) for r in rows]


async def get_message(
    conn: AsyncConnection, inbox_id: str, message_id: str
) -> MessageRecord | None:
    """One message of an inbox (the caller has checked the inbox's scope)."""
    found = await messages_by(
        conn, and_(m.messages.c.inbox_id == inbox_id, m.messages.c.id == message_id)
    )
    return found[0] if found else None


async def get_attachment(
    conn: AsyncConnection, inbox_id: str, message_id: str, attachment_id: str
) -> AttachmentRecord | None:
    row = (
        await conn.execute(
            select(m.attachments)
            .join(m.messages, m.messages.c.id == m.attachments.c.message_id)
            .where(
                m.messages.c.inbox_id == inbox_id,
                m.messages.c.id == message_id,
                m.attachments.c.id == attachment_id,
            )
        )
    ).first()
    if row is None:
        return None
    return AttachmentRecord(
        row.id,
        row.message_id,
        row.filename,
        row.content_type,
        row.disposition,
        row.content_id,
        int(row.size),
        row.blob_key,
    )


async def raw_key_of(conn: AsyncConnection, inbox_id: str, message_id: str) -> str | None:
    found = await conn.scalar(
        select(m.messages.c.raw_key).where(
            m.messages.c.inbox_id == inbox_id, m.messages.c.id == message_id
        )
    )
    return None if found is None else str(found)
