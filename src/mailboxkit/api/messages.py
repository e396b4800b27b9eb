"""``/inboxes/{inbox_id}/messages``: list with filters and cursor pages, get, raw, update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import not_found
from mailboxkit.api.params import InboxId, Limit, MessageId, PageToken, cursor, utc
from mailboxkit.store import entries, mailboxes
from mailboxkit.store import models as m
from mailboxkit.store.blobs import BlobNotFound
from mailboxkit.store.codes import find_codes_and_links
from mailboxkit.store.inboxes import visible_inbox
from mailboxkit.store.listing import (
    MessageFilter,
    MessageRecord,
    get_message,
    list_messages,
    raw_key_of,
)

router = APIRouter(tags=["messages"], responses=s.AUTHENTICATED | s.error_responses(404))

TextFilter = Annotated[str | None, Query(max_length=320, pattern=s.NO_NUL)]


class JsonResponse(Response):
    """JSON made by pydantic's serializer from plain values (datetimes as the schemas write
    them), without building the response models first."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def _item_fields(r: MessageRecord) -> dict[str, object]:
    """The fields of ``MessageItem``, as plain JSON values (the store keeps addresses in the
    API's ``{name, email}`` shape)."""
    return {
        "message_id": r.id,
        "inbox_id": r.inbox_id,
        "thread_id": r.thread_id,
        "direction": r.direction,
        "from": {"name": r.from_name, "email": r.from_email} if r.from_email else None,
        "to": r.to,
        "cc": r.cc,
        "subject": r.subject,
        "preview": r.preview,
        "labels": r.labels,
        "read": r.read,
        "has_attachments": r.has_attachments,
        "size": r.size,
        "received_at": r.received_at,
        "sent_at": r.sent_at,
    }


def message_schema(r: MessageRecord) -> s.Message:
    return s.Message.model_validate(
        {
            **_item_fields(r),
            "reply_to": r.reply_to,
            "text": r.text,
            "html": r.html,
            "extracted_text": r.extracted_text or "",
            "headers": [s.Header(name=h[0], value=h[1]) for h in r.headers or [] if len(h) == 2],
            "internet_message_id": r.message_id_header,
            "in_reply_to": r.in_reply_to,
            "references": r.references,
            "attachments": [
                s.AttachmentInfo(
                    attachment_id=a.id,
                    filename=a.filename,
                    content_type=a.content_type,
                    size=a.size,
                    disposition=a.disposition,
                    content_id=a.content_id,
                )
                for a in r.attachments
            ],
            "auth": r.auth,
            **find_codes_and_links(r.subject, r.text, r.html).as_dict(),
        }
    )


@asynccontextmanager
async def _reading(ctx: Ctx, owner: Principal, inbox_id: str) -> AsyncIterator[AsyncConnection]:
    """A read connection, once it shows that the caller may see ``inbox_id`` (else 404)."""
    async with ctx.db.read() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        yield conn


@router.get(
    "/inboxes/{inbox_id}/messages",
    response_model=s.MessageList,
    summary="List messages",
    description="The inbox's messages, newest first, one page at a time: pass "
    "`next_page_token` back as `page_token`. Filters combine with AND; text filters are "
    "case-insensitive substrings; `q` searches subject and text.",
)
async def list_inbox_messages(
    inbox_id: InboxId,
    owner: Principal,
    ctx: Ctx,
    limit: Limit = 50,
    page_token: PageToken = None,
    before: Annotated[datetime | None, Query(examples=["2026-11-28T00:00:00Z"])] = None,
    after: Annotated[datetime | None, Query(examples=["2026-11-01T00:00:00Z"])] = None,
    from_: Annotated[
        str | None, Query(alias="from", max_length=320, pattern=s.NO_NUL, examples=["alice"])
    ] = None,
    to: TextFilter = None,
    subject: TextFilter = None,
    label: Annotated[str | None, Query(max_length=64, pattern=s.NO_NUL)] = None,
    unread: bool | None = None,
    direction: Literal["inbound", "outbound"] | None = None,
    q: Annotated[str | None, Query(max_length=500, pattern=s.NO_NUL, examples=["invoice"])] = None,
) -> Response:
    filters = MessageFilter(
        before=utc(before, "before"),
        after=utc(after, "after"),
        from_=from_,
        to=to,
        subject=subject,
        label=label,
        unread=unread,
        direction=direction,
        q=q,
    )
    start = cursor(page_token)
    async with ctx.db.read() as conn:
        found, more = await list_messages(
            conn, inbox_id, filters, limit=limit, cursor=start, visible_to=owner.scope
        )
        if not found and not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
    # A page is the largest response most clients ask for often: its items are serialized
    # straight from the records (the route's schema documents them; tests hold them to it).
    return JsonResponse(
        {
            "count": len(found),
            "messages": [_item_fields(r) for r in found],
            "next_page_token": more.encode() if more else None,
        }
    )


@router.get(
    "/inboxes/{inbox_id}/messages/{message_id}",
    response_model=s.Message,
    summary="Get a message",
    description="Headers, addresses, bodies, the new text without quoted history "
    "(`extracted_text`), labels, read state, threading ids, attachments (metadata; download "
    "them through the attachment route) and SPF/DKIM/DMARC verdicts when checked.",
)
async def get_inbox_message(
    inbox_id: InboxId, message_id: MessageId, owner: Principal, ctx: Ctx
) -> s.Message:
    async with _reading(ctx, owner, inbox_id) as conn:
        found = await get_message(conn, inbox_id, message_id)
    if found is None:
        raise not_found("message")
    return message_schema(found)


RAW_EXAMPLE = "Received: from …\r\nFrom: Alice <alice@example.org>\r\nSubject: Hi\r\n\r\nHello\r\n"


@router.get(
    "/inboxes/{inbox_id}/messages/{message_id}/raw",
    response_class=Response,
    summary="Get a message's raw bytes",
    description="The message exactly as received (with this server's Received header), as "
    "`message/rfc822`.",
    responses={
        200: {
            "description": "The RFC 5322 message.",
            "content": {
                "message/rfc822": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": RAW_EXAMPLE,
                }
            },
        }
    },
)
async def get_raw_message(
    inbox_id: InboxId, message_id: MessageId, owner: Principal, ctx: Ctx
) -> Response:
    async with _reading(ctx, owner, inbox_id) as conn:
        key = await raw_key_of(conn, inbox_id, message_id)
    if key is None:
        raise not_found("message")
    try:
        data = await ctx.blobs.get(key)
    except BlobNotFound:
        raise not_found("message") from None
    return Response(
        data,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{message_id}.eml"'},
    )


async def _apply_update(conn: AsyncConnection, message_id: str, body: s.MessageUpdate) -> None:
    """Labels and read state onto every entry (IMAP copy) of the message, with new MODSEQs."""
    rows = await conn.execute(
        select(m.entries.c.folder_id, m.entries.c.uid).where(m.entries.c.message_id == message_id)
    )
    by_folder: dict[int, list[int]] = {}
    for row in rows:
        by_folder.setdefault(int(row.folder_id), []).append(int(row.uid))
    seen = [entries.SystemFlag.SEEN]
    changes = (
        (mailboxes.FlagMode.ADD, seen if body.read is True else [], body.add_labels),
        (mailboxes.FlagMode.REMOVE, seen if body.read is False else [], body.remove_labels),
    )
    for folder_id in sorted(by_folder):
        for mode, flags, keywords in changes:
            if flags or keywords:
                await mailboxes.update_flags(
                    conn,
                    folder_id=folder_id,
                    uids=by_folder[folder_id],
                    mode=mode,
                    flags=flags,
                    keywords=keywords,
                )


@router.patch(
    "/inboxes/{inbox_id}/messages/{message_id}",
    response_model=s.Message,
    summary="Update a message's labels and read state",
    description="Adds and removes labels (IMAP keywords) and sets or clears read (IMAP "
    "`\\Seen`) on every copy of the message; IMAP clients see the change.",
)
async def update_inbox_message(
    inbox_id: InboxId, message_id: MessageId, body: s.MessageUpdate, owner: Principal, ctx: Ctx
) -> s.Message:
    async with ctx.db.write() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        if await raw_key_of(conn, inbox_id, message_id) is None:
            raise not_found("message")
        await _apply_update(conn, message_id, body)
        found = await get_message(conn, inbox_id, message_id)
    assert found is not None
    if ctx.changes is not None:
        ctx.changes.notify(inbox_id)
    return message_schema(found)
