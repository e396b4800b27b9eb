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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.db import upsert
from mailboxkit.store.ids import new_id
from mailboxkit.store.mime import ParsedMessage, has_reply_prefix, normalize_subject

SUBJECT_WINDOW = timedelta(days=30)
QUERY_CHUNK = 500  # ids per IN (...) query, well under every driver's parameter limit
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
    """The thread a reply without identification fields joins, by its "Re:" subject."""
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


@dataclass(frozen=True, slots=True)
class ThreadRequest:
    inbox_id: str
    parsed: ParsedMessage
    when: datetime


_ref = m.thread_refs.c
_KNOWN_REFS = select(_ref.inbox_id, _ref.message_id_header, _ref.thread_id).where(
    _ref.inbox_id.in_(bindparam("inbox_ids", expanding=True)),
    _ref.message_id_header.in_(bindparam("keys", expanding=True)),
)
_GROW_THREAD = (
    update(m.threads)
    .where(m.threads.c.id == bindparam("tid"))
    .values(
        message_count=m.threads.c.message_count + bindparam("n"),
        last_message_at=bindparam("last"),
    )
)


async def _known_refs(
    conn: AsyncConnection, requests: Sequence[ThreadRequest], keys: set[str]
) -> dict[tuple[str, str], str]:
    known: dict[tuple[str, str], str] = {}
    inbox_ids = sorted({r.inbox_id for r in requests})
    ordered = sorted(keys)
    for start in range(0, len(ordered), QUERY_CHUNK):
        chunk = ordered[start : start + QUERY_CHUNK]
        rows = await conn.execute(_KNOWN_REFS, {"inbox_ids": inbox_ids, "keys": chunk})
        known.update({(r.inbox_id, r.message_id_header): r.thread_id for r in rows})
    return known


async def assign_threads(conn: AsyncConnection, requests: Sequence[ThreadRequest]) -> list[str]:
    """Find or start the thread of each new message, in order, and index their ids.

    Messages of one batch see each other: a reply stored with its parent joins its thread.
    Returns one thread id per request.
    """
    if not requests:
        return []
    keys = [thread_keys(r.parsed) for r in requests]
    known = await _known_refs(conn, requests, {k for ks in keys for k in ks})
    new_threads: dict[str, dict[str, Any]] = {}
    grown: dict[str, tuple[int, datetime]] = {}
    new_refs: list[dict[str, str]] = []
    chosen: list[str] = []
    for request, ids in zip(requests, keys, strict=True):
        p = request.parsed
        thread_id = next(
            (known[(request.inbox_id, k)] for k in ids if (request.inbox_id, k) in known), None
        )
        if (
            thread_id is None
            and not (p.in_reply_to or p.references)
            and has_reply_prefix(p.subject)
        ):
            await _flush_new(conn, new_threads)  # the lookup must see this batch's threads
            thread_id = await _thread_by_subject(conn, request.inbox_id, p, request.when)
        if thread_id is None:
            thread_id = new_id()
            new_threads[thread_id] = {
                "id": thread_id,
                "inbox_id": request.inbox_id,
                "subject": p.subject,
                "normalized_subject": normalize_subject(p.subject),
                "message_count": 0,
                "created_at": request.when,
                "last_message_at": request.when,
            }
        count, last = grown.get(thread_id, (0, request.when))
        grown[thread_id] = (count + 1, max(last, request.when))
        for k in ids:
            if (request.inbox_id, k) not in known:
                known[(request.inbox_id, k)] = thread_id
                new_refs.append(
                    {"inbox_id": request.inbox_id, "message_id_header": k, "thread_id": thread_id}
                )
        chosen.append(thread_id)
    for thread_id, row in new_threads.items():  # not stored yet: stored with their counts
        row["message_count"], row["last_message_at"] = grown.pop(thread_id)
    await _flush_new(conn, new_threads)
    if new_refs:
        # Another transaction may have indexed the same id since _known_refs (concurrent
        # APPENDs on PostgreSQL): its entry stays, and this message keeps the thread chosen.
        new_refs.sort(key=lambda r: (r["inbox_id"], r["message_id_header"]))  # lock order
        await conn.execute(upsert(conn, m.thread_refs).on_conflict_do_nothing(), new_refs)
    if grown:
        await conn.execute(
            _GROW_THREAD,
            [{"tid": t, "n": n, "last": last} for t, (n, last) in sorted(grown.items())],
        )
    return chosen


async def _flush_new(conn: AsyncConnection, new_threads: dict[str, dict[str, Any]]) -> None:
    if new_threads:
        await conn.execute(insert(m.threads), list(new_threads.values()))
        new_threads.clear()
