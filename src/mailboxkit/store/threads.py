"""Conversation threading per inbox (RFC 5322 §3.6.4 identification fields).

A message joins the thread of any Message-ID it shares with the inbox's thread index: its own id
(a reply that arrived first named it), its In-Reply-To, then its References from nearest to
farthest. Every id the message carries is then indexed under the chosen thread, so a later reply
that keeps only its parent in References, or whose chain misses a message, still finds the
thread. Only when a message has no identification fields at all does the subject decide: a
"Re:"-style subject joins the latest thread with the same base subject from the last 30 days
that shares a participant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id
from mailboxkit.store.mime import ParsedMessage, has_reply_prefix, normalize_subject

SUBJECT_WINDOW = timedelta(days=30)
MAX_ID_LENGTH = 998  # RFC 5322 §2.1.1 line limit; longer "ids" are garbage, not keys


def thread_keys(parsed: ParsedMessage) -> list[str]:
    """The message's ids in the order they are tried: parent first, own id last."""
    keys: list[str] = []
    candidates: Sequence[str | None] = (
        parsed.in_reply_to,
        *reversed(parsed.references),
        parsed.message_id,
    )
    for key in candidates:
        if key and len(key) <= MAX_ID_LENGTH and key not in keys:
            keys.append(key)
    return keys


async def _thread_by_subject(
    conn: AsyncConnection, inbox_id: str, parsed: ParsedMessage, when: datetime
) -> str | None:
    if not has_reply_prefix(parsed.subject):
        return None
    candidate = (
        await conn.execute(
            select(m.threads.c.id)
            .where(
                m.threads.c.inbox_id == inbox_id,
                m.threads.c.normalized_subject == normalize_subject(parsed.subject),
                m.threads.c.last_message_at >= when - SUBJECT_WINDOW,
            )
            .order_by(m.threads.c.last_message_at.desc())
            .limit(1)
        )
    ).scalar()
    if candidate is None:
        return None
    people = {a.email.lower() for a in (*parsed.to, *parsed.cc)}
    if parsed.from_ is not None:
        people.add(parsed.from_.email.lower())
    rows = await conn.execute(
        select(m.messages.c.from_email, m.messages.c.to_addrs, m.messages.c.cc_addrs).where(
            m.messages.c.thread_id == candidate
        )
    )
    for row in rows:
        seen = {row.from_email.lower()}
        seen.update(a["email"].lower() for a in (*row.to_addrs, *row.cc_addrs))
        if people & seen:
            return str(candidate)
    return None


async def assign_thread(
    conn: AsyncConnection, inbox_id: str, parsed: ParsedMessage, when: datetime
) -> str:
    """Find or start the thread of a new message and index its ids; returns the thread id."""
    keys = thread_keys(parsed)
    known: dict[str, str] = {}
    if keys:
        rows = await conn.execute(
            select(m.thread_refs.c.message_id_header, m.thread_refs.c.thread_id).where(
                m.thread_refs.c.inbox_id == inbox_id,
                m.thread_refs.c.message_id_header.in_(keys),
            )
        )
        known = {row.message_id_header: row.thread_id for row in rows}
    thread_id = next((known[k] for k in keys if k in known), None)
    if thread_id is None and not (parsed.in_reply_to or parsed.references):
        thread_id = await _thread_by_subject(conn, inbox_id, parsed, when)
    if thread_id is None:
        thread_id = new_id()
        await conn.execute(
            insert(m.threads).values(
                id=thread_id,
                inbox_id=inbox_id,
                subject=parsed.subject,
                normalized_subject=normalize_subject(parsed.subject),
                message_count=1,
                created_at=when,
                last_message_at=when,
            )
        )
    else:
        await conn.execute(
            update(m.threads)
            .where(m.threads.c.id == thread_id)
            .values(message_count=m.threads.c.message_count + 1, last_message_at=when)
        )
    missing = [k for k in keys if k not in known]
    if missing:
        await conn.execute(
            insert(m.thread_refs),
            [
                {"inbox_id": inbox_id, "message_id_header": k, "thread_id": thread_id}
                for k in missing
            ],
        )
    return thread_id
