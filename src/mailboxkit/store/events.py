"""The event model: one outbox table feeds webhooks, the live stream, waits and IMAP IDLE.

An event is written in the transaction that causes it and published to the in-process bus only
after that transaction commits, so no subscriber ever sees an event whose data may roll back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id

log = logging.getLogger(__name__)


class EventType(StrEnum):
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_RECEIVED_SPAM = "message.received.spam"
    MESSAGE_RECEIVED_UNAUTHENTICATED = "message.received.unauthenticated"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_BOUNCED = "message.bounced"
    MESSAGE_COMPLAINED = "message.complained"
    MESSAGE_REJECTED = "message.rejected"
    DOMAIN_VERIFIED = "domain.verified"
    DOMAIN_VERIFICATION_FAILED = "domain.verification_failed"


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: str
    type: EventType
    account_id: str
    inbox_id: str | None
    message_id: str | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: EventType
    account_id: str
    data: dict[str, Any]
    now: datetime
    inbox_id: str | None = None
    message_id: str | None = None


async def record_events(conn: AsyncConnection, new: Sequence[NewEvent]) -> list[Event]:
    """Write events to the outbox inside the caller's transaction, in order."""
    if not new:
        return []
    rows: list[dict[str, Any]] = []
    for e in new:
        event_id = new_id()
        payload = {
            "type": str(e.type),
            "event_id": event_id,
            "timestamp": e.now.isoformat(),
            "data": e.data,
        }
        rows.append(
            {
                "id": event_id,
                "type": str(e.type),
                "account_id": e.account_id,
                "inbox_id": e.inbox_id,
                "message_id": e.message_id,
                "payload": payload,
                "created_at": e.now,
            }
        )
    result = await conn.execute(
        insert(m.events).returning(m.events.c.seq, sort_by_parameter_order=True), rows
    )
    return [
        Event(seq, r["id"], e.type, e.account_id, e.inbox_id, e.message_id, r["payload"], e.now)
        for seq, r, e in zip(result.scalars(), rows, new, strict=True)
    ]


async def record_event(
    conn: AsyncConnection,
    type_: EventType,
    *,
    account_id: str,
    data: dict[str, Any],
    now: datetime,
    inbox_id: str | None = None,
    message_id: str | None = None,
) -> Event:
    """Write one event to the outbox inside the caller's transaction."""
    [event] = await record_events(
        conn, [NewEvent(type_, account_id, data, now, inbox_id, message_id)]
    )
    return event


class EventBus:
    """Fan-out of committed events to in-process subscribers (IDLE, streams, waits).

    Each subscriber has a bounded queue; one that falls behind loses events and is told so by
    :attr:`Subscription.overflowed`, after which it must catch up from the database.
    """

    def __init__(self, queue_size: int = 10_000) -> None:
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size

    def subscribe(self) -> Subscription:
        sub = Subscription(self, asyncio.Queue(self._queue_size))
        self._subscribers.add(sub)
        return sub

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for sub in tuple(self._subscribers):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.overflowed = True

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)


@dataclass(slots=True, eq=False)
class Subscription:
    bus: EventBus
    queue: asyncio.Queue[Event]
    overflowed: bool = False

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
