"""Threads as the HTTP API lists and shows them: participants, counts, messages oldest first.

Threads are per inbox (``store/threads.py`` builds them); pages are newest activity first,
ordered by ``(last_message_at, id)`` descending with the same cursor as message listings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Scope
from mailboxkit.store.inboxes import in_scope
from mailboxkit.store.listing import Cursor, MessageRecord, messages_by


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    id: str
    inbox_id: str
    subject: str
    message_count: int
    created_at: datetime
    last_message_at: datetime
    participants: list[dict[str, str]]
    preview: str
    messages: list[MessageRecord] = field(default_factory=list)


async def _participants(
    conn: AsyncConnection, thread_ids: Sequence[str]
) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """Each thread's distinct addresses (first seen first) and its latest message's preview."""
    people: dict[str, dict[str, dict[str, str]]] = {t: {} for t in thread_ids}
    previews: dict[str, str] = {}
    if not thread_ids:
        return {}, previews
    c = m.messages.c
    rows = await conn.execute(
        select(c.thread_id, c.from_name, c.from_email, c.to_addrs, c.cc_addrs, c.preview)
        .where(c.thread_id.in_(list(thread_ids)))
        .order_by(c.received_at, c.id)
    )
    for row in rows:
        seen = people[row.thread_id]
        addresses = [{"name": row.from_name, "email": row.from_email}]
        addresses += [*(row.to_addrs or []), *(row.cc_addrs or [])]
        for address in addresses:
            email = str(address.get("email", ""))
            if email and email.lower() not in seen:
                seen[email.lower()] = {"name": str(address.get("name", "")), "email": email}
        previews[row.thread_id] = row.preview
    return {t: list(p.values()) for t, p in people.items()}, previews


def _record(row: Any, people: list[dict[str, str]], preview: str) -> ThreadRecord:
    return ThreadRecord(
        row.id,
        row.inbox_id,
        row.subject,
        int(row.message_count),
        row.created_at,
        row.last_message_at,
        people,
        preview,
    )


async def list_threads(
    conn: AsyncConnection, inbox_id: str, *, limit: int, cursor: Cursor | None = None
) -> tuple[list[ThreadRecord], Cursor | None]:
    """One page of an inbox's threads, latest activity first (the caller checked the scope)."""
    t = m.threads.c
    query = select(m.threads).where(t.inbox_id == inbox_id)
    if cursor is not None:
        query = query.where(
            or_(
                t.last_message_at < cursor.at,
                and_(t.last_message_at == cursor.at, t.id < cursor.id),
            )
        )
    rows = (
        await conn.execute(query.order_by(t.last_message_at.desc(), t.id.desc()).limit(limit + 1))
    ).all()
    page = rows[:limit]
    people, previews = await _participants(conn, [r.id for r in page])
    records = [_record(r, people.get(r.id, []), previews.get(r.id, "")) for r in page]
    if len(rows) > limit and records:
        return records, Cursor(records[-1].last_message_at, records[-1].id)
    return records, None


async def get_thread(conn: AsyncConnection, scope: Scope, thread_id: str) -> ThreadRecord | None:
    """A thread in ``scope`` with its messages, oldest first."""
    row = (
        await conn.execute(
            select(m.threads)
            .join(m.inboxes, m.inboxes.c.id == m.threads.c.inbox_id)
            .where(m.threads.c.id == thread_id, in_scope(scope))
        )
    ).first()
    if row is None:
        return None
    people, previews = await _participants(conn, [row.id])
    record = _record(row, people.get(row.id, []), previews.get(row.id, ""))
    messages = await messages_by(conn, m.messages.c.thread_id == row.id)
    return replace(record, messages=messages)
