"""What a sending provider tells us after it accepted a message: delivered, bounced, complained.

Implementation notes:

- Feedback names the message by the provider's id, stored on the recipients' rows when the
  transport accepted it (``outbound_recipients.provider_message_id``), and the recipients by
  address (compared lowercased). Feedback about a message or a recipient we do not know is
  ignored: another sender may share the provider account.
- Status moves only forward, and each move is made by one ``UPDATE … WHERE status IN (…)``:
  ``sent → delivered``; ``sent | delivered → bounced``; ``sent | delivered → complained``.
  A notification delivered twice (SNS delivers at least once), or two at once on two server
  processes, changes the rows once and fires its event once.
- In the same transaction: the event (``message.delivered``, ``message.bounced``,
  ``message.complained``) naming the recipients whose row moved, and for permanent bounces and
  complaints those addresses on the account's suppression list. No DSN is filed: the provider
  mails its own bounce to the sender (SES's email feedback forwarding) unless told not to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store import suppressions
from mailboxkit.store.events import Event, EventType, NewEvent, record_events
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.suppressions import NewSuppression, SuppressionReason

log = logging.getLogger(__name__)


class FeedbackKind(StrEnum):
    DELIVERY = "delivery"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


@dataclass(frozen=True, slots=True)
class FeedbackRecipient:
    email: str
    status: str = ""  # bounces: the enhanced status code (RFC 3463)
    diagnostic: str = ""  # bounces: the remote server's reply; deliveries: its 250 reply


@dataclass(frozen=True, slots=True)
class Feedback:
    kind: FeedbackKind
    provider: str  # "ses"
    provider_message_id: str
    recipients: Sequence[FeedbackRecipient]
    permanent: bool = False  # bounces: the address is bad for good (suppressed)
    details: dict[str, Any] = field(default_factory=dict)  # added to the event's data


_MOVES: dict[FeedbackKind, tuple[RecipientStatus, frozenset[RecipientStatus], EventType]] = {
    FeedbackKind.DELIVERY: (
        RecipientStatus.DELIVERED,
        frozenset({RecipientStatus.SENT}),
        EventType.MESSAGE_DELIVERED,
    ),
    FeedbackKind.BOUNCE: (
        RecipientStatus.BOUNCED,
        frozenset({RecipientStatus.SENT, RecipientStatus.DELIVERED}),
        EventType.MESSAGE_BOUNCED,
    ),
    FeedbackKind.COMPLAINT: (
        RecipientStatus.COMPLAINED,
        frozenset({RecipientStatus.SENT, RecipientStatus.DELIVERED}),
        EventType.MESSAGE_COMPLAINED,
    ),
}


@dataclass(frozen=True, slots=True)
class Applied:
    events: list[Event]
    recipients: list[str]  # whose status moved
    suppressed: list[str]  # newly put on the suppression list


def _reply(kind: FeedbackKind, item: FeedbackRecipient) -> str:
    if kind is FeedbackKind.COMPLAINT:
        return "complaint: the recipient marked the message as spam"
    return item.diagnostic


async def apply_feedback(conn: AsyncConnection, feedback: Feedback, *, now: datetime) -> Applied:
    """Record ``feedback`` in the caller's transaction; the events to publish after commit."""
    r, o = m.outbound_recipients.c, m.outbound_messages.c
    rows = (
        await conn.execute(
            select(r.id, r.recipient, o.account_id, o.inbox_id, o.message_id)
            .join(m.outbound_messages, o.id == r.outbound_id)
            .where(r.provider_message_id == feedback.provider_message_id)
            .order_by(r.id)
        )
    ).all()
    moved = await _move(conn, feedback, rows, now)
    if not moved:
        log.info(
            "event=feedback_unmatched provider=%s kind=%s known_rows=%d",
            feedback.provider,
            feedback.kind,
            len(rows),
        )
        return Applied([], [], [])
    first = rows[0]
    changed = [(row.recipient, moved[row.id]) for row in rows if row.id in moved]
    suppressed: list[str] = []
    reason = _suppression_reason(feedback)
    if reason is not None:
        items = [
            NewSuppression(email, reason, _reply(feedback.kind, item), first.message_id)
            for email, item in changed
        ]
        suppressed = await suppressions.add(conn, first.account_id, items, now=now)
    thread_id = None
    if first.message_id:
        thread_id = await conn.scalar(
            select(m.messages.c.thread_id).where(m.messages.c.id == first.message_id)
        )
    data: dict[str, Any] = {
        "message_id": first.message_id,
        "inbox_id": first.inbox_id,
        "thread_id": thread_id,
        "recipients": [email for email, _ in changed],
    }
    if feedback.kind is FeedbackKind.BOUNCE:
        data["bounces"] = [
            {"email": email, "status": item.status, "diagnostic": item.diagnostic}
            for email, item in changed
        ]
    data.update(feedback.details)
    data["provider"] = feedback.provider
    data["provider_message_id"] = feedback.provider_message_id
    event = NewEvent(
        _MOVES[feedback.kind][2],
        first.account_id,
        data,
        now,
        inbox_id=first.inbox_id,
        message_id=first.message_id,
    )
    return Applied(await record_events(conn, [event]), data["recipients"], suppressed)


async def _move(
    conn: AsyncConnection, feedback: Feedback, rows: Sequence[Any], now: datetime
) -> dict[int, FeedbackRecipient]:
    """Move the named recipients' rows forward; the ids of those that moved."""
    r = m.outbound_recipients.c
    target, before, _ = _MOVES[feedback.kind]
    by_address = {row.recipient.lower(): row for row in rows}
    moved: dict[int, FeedbackRecipient] = {}
    for item in feedback.recipients:
        row = by_address.get(item.email.strip().lower())
        if row is None or row.id in moved:
            continue
        result = await conn.execute(
            update(m.outbound_recipients)
            .where(r.id == row.id, r.status.in_([s.value for s in before]))
            .values(
                status=target.value,
                last_reply=_reply(feedback.kind, item)[:2000],
                updated_at=now,
            )
            .returning(r.id)
        )
        if result.scalar() is not None:
            moved[row.id] = item
    return moved


def _suppression_reason(feedback: Feedback) -> SuppressionReason | None:
    if feedback.kind is FeedbackKind.COMPLAINT:
        return SuppressionReason.COMPLAINT
    if feedback.kind is FeedbackKind.BOUNCE and feedback.permanent:
        return SuppressionReason.BOUNCE
    return None
