"""The delivery log of a sent message, as the API shows it: each recipient's status and last
reply, from the outbound queue's rows (kept after the content is purged, ``store/retention``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.outbox import RecipientStatus


@dataclass(frozen=True, slots=True)
class RecipientDelivery:
    recipient: str
    status: RecipientStatus
    attempts: int
    last_reply: str
    updated_at: datetime
    next_attempt_at: datetime | None  # queued: when it is tried again


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    message_id: str
    queued_at: datetime
    expires_at: datetime
    purged_at: datetime | None
    recipients: list[RecipientDelivery]


async def delivery_log(conn: AsyncConnection, inbox_id: str, message_id: str) -> DeliveryLog | None:
    """The log of the message ``message_id`` sent from ``inbox_id``; None if it was not."""
    o, r = m.outbound_messages.c, m.outbound_recipients.c
    head = (
        await conn.execute(
            select(o.id, o.created_at, o.expires_at, o.purged_at).where(
                o.message_id == message_id, o.inbox_id == inbox_id
            )
        )
    ).first()
    if head is None:
        return None
    rows = await conn.execute(
        select(r.recipient, r.status, r.attempts, r.last_reply, r.updated_at, r.next_attempt_at)
        .where(r.outbound_id == head.id)
        .order_by(r.id)
    )
    recipients = [
        RecipientDelivery(
            row.recipient,
            RecipientStatus(row.status),
            row.attempts,
            row.last_reply,
            row.updated_at,
            row.next_attempt_at if row.status == RecipientStatus.QUEUED.value else None,
        )
        for row in rows
    ]
    return DeliveryLog(message_id, head.created_at, head.expires_at, head.purged_at, recipients)
