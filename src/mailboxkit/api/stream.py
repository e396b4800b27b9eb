"""``/events`` (a live stream of Server-Sent Events) and ``/inboxes/{id}/messages/wait``.

Implementation notes:

- Both read the event outbox through :class:`~mailboxkit.store.eventfeed.EventFeed`, so they
  never skip an event, and are woken by the in-process bus when this process commits one. For
  events committed by *other* processes sharing PostgreSQL they also look at the table every
  ``poll_interval`` (1 s by default): a stream or wait on one node sees mail received on
  another within about a second. (LISTEN/NOTIFY would cut that; the poll is one indexed query.)
- The stream: ``id:`` is the event's ``seq``, the watermark of the feed, so a client that
  reconnects with ``Last-Event-ID`` gets every later event exactly once, in order: replayed
  from the table, then followed live. Without it the stream starts at the newest event.
  Comments keep idle connections open; the stream ends when the server shuts down, and
  when its key is revoked or its account deleted: the key is looked up again with each
  keep-alive (``event_stream_keepalive``, 15 s), so a revoked key streams nothing past that.
- Wait: the oldest matching message received after ``after`` (default: when the request came)
  is answered at once if already stored, else the first matching one to arrive; 204 once
  ``timeout`` passes. A message is never older than ``after``.
- Scope: the key's account; an inbox key sees only its inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.messages import message_schema
from mailboxkit.api.params import ID_PATTERN, InboxId, utc
from mailboxkit.api.payloads import capped, with_download_urls
from mailboxkit.store import models as m
from mailboxkit.store.eventfeed import EventFeed, head
from mailboxkit.store.events import Event, EventType, Subscription
from mailboxkit.store.inboxes import visible_inbox
from mailboxkit.store.listing import get_message
from mailboxkit.store.webhooks import matches, valid_pattern

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"], responses=s.AUTHENTICATED | s.error_responses(404))

RECEIVED = str(EventType.MESSAGE_RECEIVED)
SSE_EXAMPLE = (
    "id: 1042\nevent: message.received\ndata: "
    '{"type":"message.received","event_id":"0193a3c4-…","timestamp":"2026-11-28T09:30:00+00:00",'
    '"data":{"message_id":"0193a3c4-…","inbox_id":"0193a3c2-…","subject":"Your code",'
    '"codes":["482913"],"links":[]}}\n\n'
)


def _scope_filter(account_id: str, inbox_ids: Sequence[str]) -> ColumnElement[bool]:
    condition = m.events.c.account_id == account_id
    if inbox_ids:
        condition = and_(condition, m.events.c.inbox_id.in_(list(inbox_ids)))
    return condition


async def _next_wake(
    sub: Subscription,
    wanted: Callable[[Event], bool],
    seconds: float,
    closing: asyncio.Event,
) -> bool:
    """Wait until the bus brings a wanted event (True) or ``seconds`` pass (False)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while not closing.is_set():
                if sub.overflowed:
                    sub.overflowed = False
                    return True
                getter = asyncio.ensure_future(sub.get())
                closer = asyncio.ensure_future(closing.wait())
                try:
                    done, _ = await asyncio.wait(
                        {getter, closer}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    getter.cancel()
                    closer.cancel()
                if getter in done and not getter.cancelled() and wanted(getter.result()):
                    return True
    return False


async def _wire(ctx: ApiContext, conn: AsyncConnection, event: Event) -> bytes:
    payload = await with_download_urls(
        conn, ctx.blobs, event.payload, ttl=ctx.events.payload.url_ttl, now=ctx.clock.now()
    )
    return capped(payload, ctx.events.payload)


async def _key_is_live(conn: AsyncConnection, key_id: str) -> bool:
    found = await conn.scalar(
        select(m.api_keys.c.id).where(m.api_keys.c.id == key_id, m.api_keys.c.revoked_at.is_(None))
    )
    return found is not None


def _patterns(types: list[str] | None) -> list[str]:
    patterns = [t for item in types or () for t in item.split(",") if t]
    for pattern in patterns:
        if not valid_pattern(pattern):
            raise ApiError(
                422,
                "validation_error",
                f"{pattern!r} matches no event type",
                fields=[{"field": "query.type", "message": "unknown event type"}],
            )
    return patterns


def _resume_point(last_event_id: str | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return None
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 18:
        raise ApiError(
            422,
            "validation_error",
            "Last-Event-ID must be the id of an event of this stream",
            fields=[{"field": "header.last-event-id", "message": "not an event id"}],
        )
    return int(value)


@router.get(
    "/events",
    response_class=StreamingResponse,
    summary="Stream events (Server-Sent Events)",
    description="A `text/event-stream` of the account's events (an inbox key: its inbox's), "
    "optionally only of some inboxes (`inbox_id`, repeatable) and types (`type`, names or "
    "dot-boundary prefixes, repeatable or comma-separated). Each event has `id:` (its "
    "sequence number), `event:` (its type) and `data:` (the same JSON a webhook gets). "
    "Reconnect with `Last-Event-ID` (or `?last_event_id=`) to get every event after it "
    "without gaps; without it the stream starts now.",
    responses={200: {"content": {"text/event-stream": {"example": SSE_EXAMPLE}}}},
)
async def stream_events(
    owner: Principal,
    ctx: Ctx,
    inbox_id: Annotated[
        list[Annotated[str, Query(pattern=ID_PATTERN)]] | None, Query(max_length=100)
    ] = None,
    type: Annotated[list[str] | None, Query(max_length=50, examples=["message.received"])] = None,
    last_event_id: Annotated[str | None, Query(max_length=20)] = None,
    last_event_header: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, include_in_schema=False)
    ] = None,
) -> StreamingResponse:
    patterns = _patterns(type)
    inboxes = list(dict.fromkeys(inbox_id or ()))
    if owner.inbox_id is not None:
        if any(i != owner.inbox_id for i in inboxes):
            raise not_found("inbox")
        inboxes = [owner.inbox_id]
    async with ctx.db.read() as conn:
        for wanted_inbox in inboxes:
            if not await visible_inbox(conn, owner.scope, wanted_inbox):
                raise not_found("inbox")
    resume = _resume_point(last_event_header or last_event_id)
    if ctx.bus is None:
        raise ApiError(503, "unavailable", "the event stream is not available")
    sub = ctx.bus.subscribe()
    try:
        async with ctx.db.read() as conn:
            start = resume if resume is not None else await head(conn)
    except BaseException:
        sub.close()
        raise
    feed = EventFeed(start, is_sqlite=ctx.db.is_sqlite)
    where = _scope_filter(owner.account_id, inboxes)

    def wanted(event: Event) -> bool:
        return event.account_id == owner.account_id and (not inboxes or event.inbox_id in inboxes)

    async def frames() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        keepalive = ctx.events.stream_keepalive
        try:
            yield b"retry: 2000\n\n"
            quiet_since = checked_at = loop.time()
            while not ctx.closing.is_set():
                chunks = []
                async with ctx.db.read() as conn:
                    if loop.time() - checked_at >= keepalive:
                        if not await _key_is_live(conn, owner.key_id):
                            break
                        checked_at = loop.time()
                    events, more = await feed.read(conn, where)
                    for event in events:
                        if not patterns or matches(patterns, str(event.type)):
                            data = await _wire(ctx, conn, event)
                            kind = str(event.type).encode()
                            chunks.append(
                                b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, kind, data)
                            )
                # Written with no database connection held: a slow reader holds only itself.
                for chunk in chunks:
                    yield chunk
                if chunks:
                    quiet_since = loop.time()
                if more:
                    continue
                if loop.time() - quiet_since >= keepalive:
                    yield b": keepalive\n\n"
                    quiet_since = loop.time()
                timeout = 0.2 if feed.held else min(ctx.events.poll_interval, keepalive)
                await _next_wake(sub, wanted, timeout, ctx.closing)
            else:
                return  # the server is shutting down
            yield b": the API key was revoked\n\n"  # the loop's only break
        finally:
            sub.close()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _message_conditions(
    inbox_id: str, after: datetime, strict: bool, from_: str | None, subject: str | None
) -> list[ColumnElement[bool]]:
    """Inbound messages of the inbox received after ``after``, matching the text filters
    (case-insensitive substrings, as the message list's)."""
    c = m.messages.c
    out: list[ColumnElement[bool]] = [
        c.inbox_id == inbox_id,
        c.direction == "inbound",
        c.received_at > after if strict else c.received_at >= after,
    ]
    if from_:
        out.append(
            or_(
                c.from_email.icontains(from_, autoescape=True),
                c.from_name.icontains(from_, autoescape=True),
            )
        )
    if subject:
        out.append(c.subject.icontains(subject, autoescape=True))
    return out


async def _first_match(
    conn: AsyncConnection, conditions: list[ColumnElement[bool]], ids: Sequence[str] | None = None
) -> str | None:
    c = m.messages.c
    query = select(c.id).where(*conditions)
    if ids is not None:
        query = query.where(c.id.in_(list(ids)))
    found = await conn.scalar(query.order_by(c.received_at, c.id).limit(1))
    return None if found is None else str(found)


@router.get(
    "/inboxes/{inbox_id}/messages/wait",
    response_model=s.Message,
    summary="Wait for a message",
    description="Holds the request until a message matching the filters arrives in the inbox "
    "(or has arrived since `after`), then answers it as `GET …/messages/{id}` would; 204 "
    "when `timeout` seconds pass first. `after` defaults to the moment of the request; with "
    "it, the oldest matching message received after that time is answered at once, so "
    "calling again with the last message's `received_at` steps through new mail one by one. "
    "`from` and `subject` are case-insensitive substrings. Spam and unauthenticated mail "
    "counts too (check `auth`).",
    responses={204: {"description": "Nothing arrived within `timeout`."}},
)
async def wait_for_message(
    inbox_id: InboxId,
    owner: Principal,
    ctx: Ctx,
    timeout: Annotated[  # noqa: ASYNC109 (the API's parameter, not a coroutine's)
        float, Query(ge=0, le=3600, description="Seconds to wait at most.", examples=[30])
    ] = 30,
    after: Annotated[datetime | None, Query(examples=["2026-11-28T09:30:00Z"])] = None,
    from_: Annotated[
        str | None, Query(alias="from", max_length=320, pattern=s.NO_NUL, examples=["github"])
    ] = None,
    subject: Annotated[
        str | None, Query(max_length=320, pattern=s.NO_NUL, examples=["verify"])
    ] = None,
) -> s.Message | Response:
    since = utc(after, "after") or ctx.clock.now()
    conditions = _message_conditions(inbox_id, since, after is not None, from_, subject)
    if ctx.bus is None:
        raise ApiError(503, "unavailable", "waiting is not available")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, ctx.events.wait_max_timeout)
    with ctx.bus.subscribe() as sub:
        async with ctx.db.read() as conn:
            if not await visible_inbox(conn, owner.scope, inbox_id):
                raise not_found("inbox")
            feed = EventFeed(await head(conn), is_sqlite=ctx.db.is_sqlite)
            found = await _first_match(conn, conditions)
        where = and_(m.events.c.inbox_id == inbox_id, m.events.c.type.startswith(RECEIVED))
        while found is None:
            remaining = deadline - loop.time()
            if remaining <= 0 or ctx.closing.is_set():
                return Response(status_code=204)
            poll = 0.2 if feed.held else ctx.events.poll_interval
            await _next_wake(
                sub, lambda e: e.inbox_id == inbox_id, min(remaining, poll), ctx.closing
            )
            async with ctx.db.read() as conn:
                while found is None:
                    events, more = await feed.read(conn, where)
                    ids = [e.message_id for e in events if e.message_id is not None]
                    if ids:
                        found = await _first_match(conn, conditions, ids)
                    if not more:
                        break
    async with ctx.db.read() as conn:
        record = await get_message(conn, inbox_id, found)
    if record is None:  # deleted in the meantime
        return Response(status_code=204)
    return message_schema(record)
