"""Per-account usage: API requests (counted per day, by ``store/counters.py``) and messages
received and sent.

Messages are counted from the event outbox (``message.received*`` and ``message.sent``), which
is written in the same transaction as the message itself, so the count can never disagree with
what was stored. Pruning old events (a future retention setting) will lower those counts; the
delivery path can then count into ``usage_counters`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.events import EventType

RECEIVED_TYPES = (
    EventType.MESSAGE_RECEIVED,
    EventType.MESSAGE_RECEIVED_SPAM,
    EventType.MESSAGE_RECEIVED_UNAUTHENTICATED,
)


@dataclass(frozen=True, slots=True)
class Usage:
    api_requests: int
    messages_received: int
    messages_sent: int


def day_of(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


async def usage(
    conn: AsyncConnection, account_id: str, *, since: datetime, until: datetime
) -> Usage:
    """Usage of ``account_id`` from ``since`` (inclusive) to ``until`` (exclusive).

    API requests are counted by whole UTC days: every day that ``[since, until)`` touches.
    """
    requests = await conn.scalar(
        select(func.coalesce(func.sum(m.usage_counters.c.api_requests), 0)).where(
            m.usage_counters.c.account_id == account_id,
            m.usage_counters.c.day >= day_of(since),
            m.usage_counters.c.day <= day_of(until),
        )
    )
    window = (
        m.events.c.account_id == account_id,
        m.events.c.created_at >= since,
        m.events.c.created_at < until,
    )
    # A received message may carry several event types (e.g. also ``.spam``): count messages.
    received = await conn.scalar(
        select(func.count(func.distinct(m.events.c.message_id))).where(
            *window, m.events.c.type.in_([str(t) for t in RECEIVED_TYPES])
        )
    )
    sent = await conn.scalar(
        select(func.count(func.distinct(m.events.c.message_id))).where(
            *window, m.events.c.type == str(EventType.MESSAGE_SENT)
        )
    )
    return Usage(int(requests or 0), int(received or 0), int(sent or 0))
