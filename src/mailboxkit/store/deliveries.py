"""The worker's side of the outbound queue: claims, leases, and recording what happened.

Implementation notes (see also ``store.outbox``):

- Claims (:func:`claim`): a due recipient (``queued`` and ``next_attempt_at`` passed, or
  ``sending`` with its lease passed: its worker died) becomes ``sending`` with a lease.
  PostgreSQL claims with ``SELECT … FOR UPDATE SKIP LOCKED``, so several nodes share the queue;
  SQLite has one writer and one worker, and at start :func:`release_claims` makes every claim
  due again. Each claim increments ``attempts``, which fences it: a worker settles
  (:func:`settle`) only rows still ``sending`` with its attempt number, so a worker that
  outlived its lease cannot overwrite the next one's result.
- Settling writes, in one transaction: the new states, ``message.sent`` per accepted message,
  local deliveries, and for permanent failures the DSN in the sender's INBOX, a
  ``message.bounced`` event and the bad addresses on the suppression list. So a DSN is filed
  exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store import suppressions
from mailboxkit.store.events import Event, EventType, NewEvent, record_events
from mailboxkit.store.messages import NewMessage, insert_messages
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.quota import lock_accounts
from mailboxkit.store.suppressions import NewSuppression, SuppressionReason

log = logging.getLogger(__name__)

FENCE_CHUNK = 400  # (id, attempts) pairs per UPDATE, well under every driver's parameter limit


@dataclass(frozen=True, slots=True)
class Claimed:
    """One recipient a worker holds until ``lease_until``."""

    id: int
    outbound_id: str
    recipient: str
    domain: str
    attempts: int  # this attempt included
    lease_until: datetime
    account_id: str
    inbox_id: str
    message_id: str | None
    raw_key: str
    envelope_from: str
    created_at: datetime
    expires_at: datetime


def _due(now: datetime) -> Any:
    r = m.outbound_recipients.c
    return or_(
        and_(r.status == RecipientStatus.QUEUED.value, r.next_attempt_at <= now),
        and_(r.status == RecipientStatus.SENDING.value, r.lease_until <= now),
    )


async def claim(
    conn: AsyncConnection, *, now: datetime, lease_until: datetime, limit: int
) -> list[Claimed]:
    """Take up to ``limit`` due recipients, oldest due first, until ``lease_until``."""
    r, o = m.outbound_recipients.c, m.outbound_messages.c
    query = select(r.id).where(_due(now)).order_by(r.next_attempt_at, r.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list((await conn.scalars(query)).all())
    if not ids:
        return []
    await conn.execute(
        update(m.outbound_recipients)
        .where(r.id.in_(ids))
        .values(
            status=RecipientStatus.SENDING.value,
            lease_until=lease_until,
            attempts=r.attempts + 1,
            updated_at=now,
        )
    )
    rows = await conn.execute(
        select(
            r.id,
            r.outbound_id,
            r.recipient,
            r.domain,
            r.attempts,
            o.account_id,
            o.inbox_id,
            o.message_id,
            o.raw_key,
            o.envelope_from,
            o.created_at,
            o.expires_at,
        )
        .join(m.outbound_messages, o.id == r.outbound_id)
        .where(r.id.in_(ids))
        .order_by(r.outbound_id, r.id)
    )
    return [
        Claimed(
            id=row.id,
            outbound_id=row.outbound_id,
            recipient=row.recipient,
            domain=row.domain,
            attempts=row.attempts,
            lease_until=lease_until,
            account_id=row.account_id,
            inbox_id=row.inbox_id,
            message_id=row.message_id,
            raw_key=row.raw_key,
            envelope_from=row.envelope_from,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )
        for row in rows
    ]


async def release_claims(conn: AsyncConnection, *, now: datetime) -> int:
    """Make every claim due again: for SQLite at start, where this process is the only worker."""
    r = m.outbound_recipients.c
    result = await conn.execute(
        update(m.outbound_recipients)
        .where(r.status == RecipientStatus.SENDING.value)
        .values(status=RecipientStatus.QUEUED.value, lease_until=None, updated_at=now)
    )
    return int(result.rowcount or 0)


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the next recipient becomes due (a queued one's time, or a claim's lease end)."""
    r = m.outbound_recipients.c
    queued = await conn.scalar(
        select(func.min(r.next_attempt_at)).where(r.status == RecipientStatus.QUEUED.value)
    )
    leased = await conn.scalar(
        select(func.min(r.lease_until)).where(r.status == RecipientStatus.SENDING.value)
    )
    times: list[datetime] = [t for t in (queued, leased) if t is not None]
    return min(times) if times else None


async def pending(conn: AsyncConnection, outbound_id: str) -> list[tuple[str, str, str]]:
    """(recipient, status, last reply) of a queued message, for tests and operators."""
    r = m.outbound_recipients.c
    rows = await conn.execute(
        select(r.recipient, r.status, r.last_reply)
        .where(r.outbound_id == outbound_id)
        .order_by(r.id)
    )
    return [(row.recipient, row.status, row.last_reply) for row in rows]


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of one claimed recipient's attempt."""

    claim: Claimed
    status: RecipientStatus  # SENT, QUEUED (try again at next_attempt_at) or BOUNCED
    reply: str
    next_attempt_at: datetime | None = None
    provider_id: str = ""  # SENT: the transport's id of the message, if it gave one


@dataclass(frozen=True, slots=True)
class Bounce:
    """The DSN (RFC 3464) for recipients of one outbound message, its blob already staged."""

    outbound_id: str
    report: NewMessage
    recipients: Sequence[dict[str, str]]  # email, status, diagnostic
    suppress: Sequence[str] = ()  # of those, the addresses to put on the suppression list


@dataclass(slots=True)
class Settled:
    events: list[Event] = field(default_factory=list)
    settled: set[int] = field(default_factory=set)  # recipient row ids this worker still held


async def _apply(conn: AsyncConnection, items: Sequence[Settlement], now: datetime) -> set[int]:
    """Write the outcomes, one statement per distinct outcome (status, reply, next time, provider
    id), each row fenced by its claim's attempt number; the ids of the rows that were still
    ours."""
    r = m.outbound_recipients.c
    groups: dict[tuple[str, str, datetime | None, str], list[Settlement]] = {}
    for item in items:
        outcome = (item.status.value, item.reply[:2000], item.next_attempt_at, item.provider_id)
        groups.setdefault(outcome, []).append(item)
    done: set[int] = set()
    for (status, reply, next_at, provider_id), group in groups.items():
        values: dict[str, Any] = {
            "status": status,
            "last_reply": reply,
            "lease_until": None,
            "updated_at": now,
        }
        if next_at is not None:
            values["next_attempt_at"] = next_at
        if provider_id:
            values["provider_message_id"] = provider_id[:255]
        for start in range(0, len(group), FENCE_CHUNK):
            chunk = group[start : start + FENCE_CHUNK]
            fences = [(i.claim.id, i.claim.attempts) for i in chunk]
            result = await conn.execute(
                update(m.outbound_recipients)
                .where(
                    tuple_(r.id, r.attempts).in_(fences),  # the claims' fences
                    r.status == RecipientStatus.SENDING.value,
                )
                .values(**values)
                .returning(r.id)
            )
            done.update(result.scalars())
    for item in items:
        if item.claim.id not in done:
            log.warning(
                "event=outbound_claim_lost outbound_id=%s recipient_id=%d",
                item.claim.outbound_id,
                item.claim.id,
            )
    return done


async def _thread_ids(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, str | None]:
    if not message_ids:
        return {}
    rows = await conn.execute(
        select(m.messages.c.id, m.messages.c.thread_id).where(
            m.messages.c.id.in_(list(message_ids))
        )
    )
    return {row.id: row.thread_id for row in rows}


async def settle(
    conn: AsyncConnection,
    items: Sequence[Settlement],
    *,
    now: datetime,
    local: Sequence[tuple[int, NewMessage]] = (),
    bounces: Sequence[Bounce] = (),
) -> Settled:
    """Record attempts' outcomes with their messages and events, in the caller's transaction.

    ``local`` pairs a recipient row id with the copy to store in that local inbox; it is stored
    only if the row is still ours. Returns the events to publish after commit.
    """
    out = Settled(settled=await _apply(conn, items, now))
    held = [i for i in items if i.claim.id in out.settled]
    deliveries = [new for rid, new in local if rid in out.settled]
    # Every account the batch stores into, locked at once in order (``store.quota``), so
    # settling batches on several nodes cannot deadlock on them.
    await lock_accounts(
        conn,
        {n.inbox.account_id for n in deliveries} | {b.report.inbox.account_id for b in bounces},
    )
    if deliveries:
        for stored in await insert_messages(conn, deliveries):
            out.events.extend(stored.events)
    first = {i.claim.outbound_id: i.claim for i in held}
    threads = await _thread_ids(conn, [c.message_id for c in first.values() if c.message_id])
    new_events: list[NewEvent] = []
    for outbound_id, c in first.items():
        accepted = [
            i.claim.recipient
            for i in held
            if i.claim.outbound_id == outbound_id and i.status is RecipientStatus.SENT
        ]
        if accepted:
            new_events.append(
                NewEvent(
                    EventType.MESSAGE_SENT,
                    c.account_id,
                    _event_data(c, threads, recipients=accepted),
                    now,
                    inbox_id=c.inbox_id,
                    message_id=c.message_id,
                )
            )
    for bounce in bounces:
        origin = first.get(bounce.outbound_id)
        if origin is None:
            continue
        mine = {i.claim.recipient for i in held if i.claim.outbound_id == bounce.outbound_id}
        recipients = [r for r in bounce.recipients if r["email"] in mine]
        if not recipients:
            continue
        [report] = await insert_messages(conn, [bounce.report])
        out.events.extend(report.events)
        bad = [
            NewSuppression(r["email"], SuppressionReason.BOUNCE, r["diagnostic"], origin.message_id)
            for r in recipients
            if r["email"] in bounce.suppress
        ]
        if bad:
            await suppressions.add(conn, origin.account_id, bad, now=now)
        new_events.append(
            NewEvent(
                EventType.MESSAGE_BOUNCED,
                origin.account_id,
                {
                    **_event_data(origin, threads, recipients=[r["email"] for r in recipients]),
                    "bounces": list(recipients),
                    "report_message_id": report.id,
                },
                now,
                inbox_id=origin.inbox_id,
                message_id=origin.message_id,
            )
        )
    out.events.extend(await record_events(conn, new_events))
    return out


def _event_data(
    c: Claimed, threads: dict[str, str | None], *, recipients: Sequence[str]
) -> dict[str, Any]:
    return {
        "message_id": c.message_id,
        "inbox_id": c.inbox_id,
        "thread_id": threads.get(c.message_id) if c.message_id else None,
        "recipients": list(recipients),
    }
