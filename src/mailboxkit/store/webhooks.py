"""Webhook endpoints and their delivery log: what the API manages and shows.

Implementation notes:

- *Matching.* An endpoint lists event names or prefixes; a prefix matches on dot boundaries, so
  ``message.received`` also matches ``message.received.spam`` and
  ``message.received.unauthenticated``, and ``message`` matches every message event. ``*``
  matches everything. ``inbox_ids`` (when set) limits it to events of those inboxes.
- An endpoint only gets events after its ``after_seq`` (the outbox head when it was made, or
  last enabled).
- Deliveries of a disabled endpoint stay pending and are not claimed until it is enabled again.
- Making, claiming and settling deliveries is ``store.webhook_dispatch``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.eventfeed import head
from mailboxkit.store.events import Event, EventType
from mailboxkit.store.ids import new_id

TEST_EVENT = "webhook.test"
ALL = "*"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to ``patterns`` gets ``event_type`` (see the notes)."""
    return any(p == ALL or event_type == p or event_type.startswith(p + ".") for p in patterns)


def valid_pattern(pattern: str) -> bool:
    """A pattern that can match something: ``*``, an event name, or a dot-boundary prefix."""
    return any(matches([pattern], str(t)) for t in EventType) or pattern in (ALL, TEST_EVENT)


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    account_id: str
    url: str
    description: str
    events: list[str]
    inbox_ids: list[str] | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None

    def secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a request now: the current one, and the old one in its grace."""
        found = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            found.append(self.previous_secret)
        return found

    def wants(self, event: Event) -> bool:
        if not matches(self.events, str(event.type)):
            return False
        return self.inbox_ids is None or event.inbox_id in self.inbox_ids


def webhook_from_row(row: Any) -> Webhook:
    return Webhook(
        row.id,
        row.account_id,
        row.url,
        row.description,
        list(row.events),
        None if row.inbox_ids is None else list(row.inbox_ids),
        bool(row.enabled),
        row.disabled_reason,
        row.created_at,
        row.updated_at,
        row.secret,
        row.previous_secret,
        row.previous_secret_expires_at,
    )


# Endpoints.


async def create_webhook(
    conn: AsyncConnection,
    *,
    account_id: str,
    url: str,
    events: Sequence[str],
    inbox_ids: Sequence[str] | None,
    description: str,
    secret: str,
    now: datetime,
) -> Webhook:
    webhook_id = new_id()
    await conn.execute(
        insert(m.webhooks).values(
            id=webhook_id,
            account_id=account_id,
            url=url,
            description=description,
            events=list(events),
            inbox_ids=None if inbox_ids is None else list(inbox_ids),
            secret=secret,
            enabled=True,
            after_seq=await head(conn),
            created_at=now,
            updated_at=now,
        )
    )
    found = await get_webhook(conn, account_id, webhook_id)
    assert found is not None
    return found


async def get_webhook(conn: AsyncConnection, account_id: str, webhook_id: str) -> Webhook | None:
    row = (
        await conn.execute(
            select(m.webhooks).where(
                m.webhooks.c.id == webhook_id, m.webhooks.c.account_id == account_id
            )
        )
    ).first()
    return None if row is None else webhook_from_row(row)


async def list_webhooks(
    conn: AsyncConnection, account_id: str, *, limit: int, after_id: str | None
) -> tuple[list[Webhook], str | None]:
    """Newest first (ids are time-ordered); the id to continue after, when there is more."""
    query = select(m.webhooks).where(m.webhooks.c.account_id == account_id)
    if after_id is not None:
        query = query.where(m.webhooks.c.id < after_id)
    rows = (await conn.execute(query.order_by(m.webhooks.c.id.desc()).limit(limit + 1))).all()
    found = [webhook_from_row(r) for r in rows[:limit]]
    return found, (found[-1].id if len(rows) > limit else None)


async def update_webhook(
    conn: AsyncConnection,
    account_id: str,
    webhook_id: str,
    changes: dict[str, Any],
    *,
    now: datetime,
) -> Webhook | None:
    """Apply ``changes`` (url, events, inbox_ids, description, enabled, disabled_reason,
    secret, previous_secret, previous_secret_expires_at). Enabling a disabled endpoint moves
    its ``after_seq`` to the head: events of the time it was disabled are not for it, even
    those the fan-out had not reached yet."""
    values = dict(changes)
    if changes.get("enabled") is True:
        w = m.webhooks.c
        values["after_seq"] = case((w.enabled.is_(False), await head(conn)), else_=w.after_seq)
    result = await conn.execute(
        update(m.webhooks)
        .where(m.webhooks.c.id == webhook_id, m.webhooks.c.account_id == account_id)
        .values(**values, updated_at=now)
    )
    if result.rowcount == 0:
        return None
    return await get_webhook(conn, account_id, webhook_id)


async def delete_webhook(conn: AsyncConnection, account_id: str, webhook_id: str) -> bool:
    result = await conn.execute(
        delete(m.webhooks).where(
            m.webhooks.c.id == webhook_id, m.webhooks.c.account_id == account_id
        )
    )
    return result.rowcount > 0


async def disable_gone(conn: AsyncConnection, webhook_id: str, *, now: datetime) -> None:
    """The endpoint answered 410 Gone: it gets nothing more until enabled again."""
    await conn.execute(
        update(m.webhooks)
        .where(m.webhooks.c.id == webhook_id)
        .values(enabled=False, disabled_reason="endpoint answered 410 Gone", updated_at=now)
    )


async def any_enabled(conn: AsyncConnection) -> bool:
    """Whether any account has an enabled endpoint."""
    found = await conn.scalar(
        select(m.webhooks.c.id).where(m.webhooks.c.enabled.is_(True)).limit(1)
    )
    return found is not None


# The delivery log.


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    response: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: tuple[Attempt, ...] = ()


def _delivery(row: Any) -> Delivery:
    pending = row.status == DeliveryStatus.PENDING
    return Delivery(
        row.id,
        row.webhook_id,
        row.event_id,
        row.event_type,
        row.status,
        int(row.attempts),
        row.next_attempt_at if pending else None,
        row.last_attempt_at,
        row.last_status_code,
        row.last_error,
        row.delivered_at,
        row.created_at,
    )


async def list_deliveries(
    conn: AsyncConnection,
    webhook_id: str,
    *,
    limit: int,
    after_id: str | None,
    status: str | None = None,
    event_id: str | None = None,
) -> tuple[list[Delivery], str | None]:
    """Newest first; the id to continue after, when there is more."""
    d = m.webhook_deliveries.c
    conditions = [d.webhook_id == webhook_id]
    if after_id is not None:
        conditions.append(d.id < after_id)
    if status is not None:
        conditions.append(d.status == status)
    if event_id is not None:
        conditions.append(d.event_id == event_id)
    rows = (
        await conn.execute(
            select(m.webhook_deliveries)
            .where(and_(*conditions))
            .order_by(d.id.desc())
            .limit(limit + 1)
        )
    ).all()
    found = [_delivery(r) for r in rows[:limit]]
    return found, (found[-1].id if len(rows) > limit else None)


async def get_delivery(conn: AsyncConnection, webhook_id: str, delivery_id: str) -> Delivery | None:
    d = m.webhook_deliveries.c
    row = (
        await conn.execute(
            select(m.webhook_deliveries).where(d.id == delivery_id, d.webhook_id == webhook_id)
        )
    ).first()
    if row is None:
        return None
    a = m.webhook_attempts.c
    attempts = await conn.execute(
        select(m.webhook_attempts).where(a.delivery_id == delivery_id).order_by(a.id)
    )
    log = tuple(
        Attempt(
            int(r.attempt), r.attempted_at, r.status_code, r.error, r.response, int(r.duration_ms)
        )
        for r in attempts
    )
    return replace(_delivery(row), attempt_log=log)
