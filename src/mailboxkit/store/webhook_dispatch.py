"""The store side of at-least-once webhook delivery: events fanned out to deliveries, claims,
outcomes, test deliveries and replays.

Implementation notes:

- *Fan-out.* :func:`fan_out` turns new outbox events into one ``webhook_deliveries`` row per
  matching endpoint (``store.webhooks`` says which match). It reads through an
  :class:`~mailboxkit.store.eventfeed.EventFeed` from the ``webhooks`` cursor row, which it
  locks (``FOR UPDATE``) so that server processes sharing a PostgreSQL database take turns; the
  unique (endpoint, event) pair makes a repeat impossible. An endpoint only gets events after
  its ``after_seq``.
- *Claims.* A delivery is claimed by bumping ``attempts`` (the claim's token) and moving
  ``next_attempt_at`` to the end of the claim's lease; claims are taken with
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two processes never claim the same row. A
  worker that dies leaves the lease to run out and the delivery is due again: a duplicate only
  across a crash. An outcome is written only if the claim is still the current one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.eventfeed import EventFeed, head
from mailboxkit.store.events import Event
from mailboxkit.store.ids import new_id
from mailboxkit.store.webhooks import TEST_EVENT, DeliveryStatus, Webhook, webhook_from_row

CURSOR = "webhooks"
"""The name of the fan-out's cursor row in ``event_cursors``."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt, with all that is needed to make it."""

    delivery_id: str
    webhook_id: str
    url: str
    secrets: tuple[str, ...]
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempt: int  # this attempt's number, from 1; the claim's token


async def ensure_cursor(conn: AsyncConnection) -> None:
    """Make the fan-out cursor if missing: from the oldest endpoint's start, else the head."""
    query = select(m.event_cursors.c.seq).where(m.event_cursors.c.name == CURSOR)
    if await conn.scalar(query) is not None:
        return
    oldest = await conn.scalar(
        select(func.min(m.webhooks.c.after_seq)).where(m.webhooks.c.enabled.is_(True))
    )
    start = int(oldest) if oldest is not None else await head(conn)
    try:
        async with conn.begin_nested():
            await conn.execute(insert(m.event_cursors).values(name=CURSOR, seq=start))
    except IntegrityError:
        pass  # another process made it


def _delivery_row(
    webhook: Webhook, event: Event, now: datetime, claimed_until: datetime | None
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "webhook_id": webhook.id,
        "event_seq": event.seq,
        "event_id": event.id,
        "event_type": str(event.type),
        "payload": None,
        "status": DeliveryStatus.PENDING,
        "attempts": 1 if claimed_until is not None else 0,
        "next_attempt_at": claimed_until or now,
        "created_at": now,
    }


class FanOutProgress:
    """This process's fan-out: its feed of events, and the cursor as it last saved it.

    The stored cursor is written with new deliveries, else at most every ``SAVE_EVERY``
    seconds: events no endpoint wants then cost no commit each. Reading them again after a
    restart is harmless: they still make no deliveries (an endpoint made since starts after
    its own ``after_seq``)."""

    SAVE_EVERY = 1.0

    def __init__(self, feed: EventFeed, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.feed = feed
        self._monotonic = monotonic
        self._saved = feed.cursor
        self._saved_at = monotonic()

    @property
    def saved(self) -> int:
        return self._saved

    def record(self, seq: int) -> None:
        """The stored cursor is ``seq`` as of now (saved or read)."""
        self._saved = seq
        self._saved_at = self._monotonic()

    def due(self) -> bool:
        return self._monotonic() - self._saved_at >= self.SAVE_EVERY


async def skip_to_head(conn: AsyncConnection, progress: FanOutProgress) -> None:
    """Move the stored cursor to the newest event, if no endpoint is enabled (checked in the
    same statement, so an endpoint made meanwhile keeps its events)."""
    newest = await head(conn)
    c = m.event_cursors.c
    moved = await conn.execute(
        update(m.event_cursors)
        .where(
            c.name == CURSOR,
            c.seq < newest,
            ~select(m.webhooks.c.id).where(m.webhooks.c.enabled.is_(True)).exists(),
        )
        .values(seq=newest)
    )
    if moved.rowcount:
        progress.feed.cursor = newest
        progress.record(newest)
    else:  # checked now: not again before SAVE_EVERY
        progress.record(progress.saved)


async def fan_out(
    conn: AsyncConnection,
    progress: FanOutProgress,
    *,
    now: datetime,
    lease_until: datetime,
    claim: int,
    lock: bool,
) -> tuple[list[Claimed], bool]:
    """New events to deliveries, the first ``claim`` of them claimed by the caller at once.

    Returns the claimed ones and whether more events may be waiting. ``lock``: take the
    cursor row ``FOR UPDATE`` (PostgreSQL).
    """
    query = select(m.event_cursors.c.seq).where(m.event_cursors.c.name == CURSOR)
    stored = await conn.scalar(query.with_for_update() if lock else query)
    if stored is None:
        return [], False
    feed = progress.feed
    if int(stored) != progress.saved:
        feed.cursor = int(stored)  # another process moved it
        progress.record(feed.cursor)
    events, more = await feed.read(conn)
    new_rows, claimed = await _deliveries(conn, events, now, lease_until, claim)
    if feed.cursor != progress.saved and (new_rows or progress.due()):
        await conn.execute(
            update(m.event_cursors).where(m.event_cursors.c.name == CURSOR).values(seq=feed.cursor)
        )
        progress.record(feed.cursor)
    if new_rows:
        await conn.execute(insert(m.webhook_deliveries), new_rows)
    return claimed, more


async def _deliveries(
    conn: AsyncConnection,
    events: list[Event],
    now: datetime,
    lease_until: datetime,
    claim: int,
) -> tuple[list[dict[str, Any]], list[Claimed]]:
    """The delivery rows ``events`` make for the endpoints that want them; the first ``claim``
    claimed."""
    if not events:
        return [], []
    accounts = {e.account_id for e in events}
    rows = await conn.execute(
        select(m.webhooks).where(
            m.webhooks.c.account_id.in_(accounts), m.webhooks.c.enabled.is_(True)
        )
    )
    hooks: dict[str, list[tuple[Webhook, int]]] = {}
    for row in rows:
        hooks.setdefault(row.account_id, []).append((webhook_from_row(row), int(row.after_seq)))
    new_rows: list[dict[str, Any]] = []
    claimed: list[Claimed] = []
    for event in events:
        for hook, after_seq in hooks.get(event.account_id, ()):
            if event.seq <= after_seq or not hook.wants(event):
                continue
            take = len(claimed) < claim
            values = _delivery_row(hook, event, now, lease_until if take else None)
            new_rows.append(values)
            if take:
                claimed.append(
                    Claimed(
                        values["id"],
                        hook.id,
                        hook.url,
                        tuple(hook.secrets(now)),
                        event.id,
                        str(event.type),
                        event.payload,
                        1,
                    )
                )
    return new_rows, claimed


async def claim_due(
    conn: AsyncConnection, *, now: datetime, lease_until: datetime, limit: int, skip_locked: bool
) -> list[Claimed]:
    """Claim up to ``limit`` pending deliveries that are due, of enabled endpoints."""
    if limit <= 0:
        return []
    d, w = m.webhook_deliveries.c, m.webhooks.c
    query = (
        select(d.id, d.attempts)
        .join(m.webhooks, w.id == d.webhook_id)
        .where(d.status == DeliveryStatus.PENDING, d.next_attempt_at <= now, w.enabled.is_(True))
        .order_by(d.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(of=m.webhook_deliveries, skip_locked=True)
    due = (await conn.execute(query)).all()
    if not due:
        return []
    ids = [r.id for r in due]
    await conn.execute(
        update(m.webhook_deliveries)
        .where(d.id.in_(ids))
        .values(attempts=d.attempts + 1, next_attempt_at=lease_until)
    )
    rows = await conn.execute(
        select(
            d.id,
            d.webhook_id,
            d.event_id,
            d.event_type,
            d.attempts,
            d.payload,
            m.events.c.payload.label("event_payload"),
            m.webhooks,
        )
        .join(m.webhooks, w.id == d.webhook_id)
        .outerjoin(m.events, m.events.c.seq == d.event_seq)
        .where(d.id.in_(ids))
    )
    out = []
    for r in rows:
        hook = webhook_from_row(r)
        payload = r.payload if r.payload is not None else r.event_payload
        out.append(
            Claimed(
                r.id,
                r.webhook_id,
                hook.url,
                tuple(hook.secrets(now)),
                r.event_id,
                r.event_type,
                dict(payload or {}),
                int(r.attempts),
            )
        )
    return out


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the next pending delivery of an enabled endpoint is due (or its lease ends)."""
    d, w = m.webhook_deliveries.c, m.webhooks.c
    found: datetime | None = await conn.scalar(
        select(func.min(d.next_attempt_at))
        .join(m.webhooks, w.id == d.webhook_id)
        .where(d.status == DeliveryStatus.PENDING, w.enabled.is_(True))
    )
    return found


@dataclass(frozen=True, slots=True)
class Outcome:
    attempted_at: datetime
    status_code: int | None
    error: str | None
    response: str
    duration_ms: int


async def record_attempt(
    conn: AsyncConnection,
    claimed: Claimed,
    outcome: Outcome,
    *,
    status: DeliveryStatus,
    next_attempt_at: datetime | None,
) -> bool:
    """Log the attempt and move the delivery on, if the claim is still current."""
    await conn.execute(
        insert(m.webhook_attempts).values(
            delivery_id=claimed.delivery_id,
            attempt=claimed.attempt,
            attempted_at=outcome.attempted_at,
            status_code=outcome.status_code,
            error=outcome.error,
            response=outcome.response,
            duration_ms=outcome.duration_ms,
        )
    )
    d = m.webhook_deliveries.c
    result = await conn.execute(
        update(m.webhook_deliveries)
        .where(
            d.id == claimed.delivery_id,
            d.attempts == claimed.attempt,
            d.status == DeliveryStatus.PENDING,
        )
        .values(
            status=status,
            next_attempt_at=next_attempt_at,
            last_attempt_at=outcome.attempted_at,
            last_status_code=outcome.status_code,
            last_error=outcome.error,
            delivered_at=outcome.attempted_at if status is DeliveryStatus.SUCCEEDED else None,
        )
    )
    return result.rowcount > 0


async def add_test_delivery(
    conn: AsyncConnection, webhook_id: str, payload: dict[str, Any], *, now: datetime
) -> str:
    """A ``webhook.test`` delivery to one endpoint, due now; its id."""
    delivery_id = new_id()
    await conn.execute(
        insert(m.webhook_deliveries).values(
            id=delivery_id,
            webhook_id=webhook_id,
            event_seq=None,
            event_id=payload["event_id"],
            event_type=TEST_EVENT,
            payload=payload,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return delivery_id


async def replay(
    conn: AsyncConnection, webhook_id: str, delivery_id: str, *, now: datetime
) -> bool:
    """Make a delivery due again now (same event id), whatever its state."""
    d = m.webhook_deliveries.c
    result = await conn.execute(
        update(m.webhook_deliveries)
        .where(d.id == delivery_id, d.webhook_id == webhook_id)
        .values(status=DeliveryStatus.PENDING, next_attempt_at=now, delivered_at=None)
    )
    return result.rowcount > 0
