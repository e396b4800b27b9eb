"""Drafts: ``/inboxes/{inbox_id}/drafts`` (create, list, get, update, delete, send) and
``/drafts`` across the account.

Implementation notes (the store side is ``store.drafts``):

- A draft takes the fields of ``messages/send``, all optional until it is sent; ``in_reply_to``
  (a message of the inbox, at creation) makes it a reply: In-Reply-To, References, "Re:" subject
  and the reply's recipients unless given, and ``\\Answered`` on the original once sent.
- Every draft has a copy in the inbox's Drafts folder (``\\Draft``); an update replaces it.
- ``send_at`` schedules it (status ``scheduled``); the scheduler (``api.scheduler``) sends it
  when due, at once when it is not in the future. At most ``SendContext.max_schedule`` ahead.
  A scheduled draft must have recipients. ``send_at: null`` cancels.
- Sending (``POST …/send`` or the scheduler) and updating are conditional on the draft as read:
  a sent draft answers 409, and so does one that was sent or changed in between.
- ``Idempotency-Key`` on ``…/send`` works as on ``messages/send``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.compose import Attachment, reply_threading
from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.draftmail import mail_of, send_draft, stage_copy, stored_attachments
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import DraftId, InboxId, Limit, PageToken, cursor, utc
from mailboxkit.api.send import (
    SUPPRESSED,
    Addresses,
    AttachmentIn,
    BodyText,
    HeaderText,
    IdempotencyHeader,
    SendContext,
    SendResponse,
    attachments_of,
    check_recipients,
    extra_headers,
    find_answer,
    idempotency,
    invalid,
    mailboxes_of,
    send_context,
)
from mailboxkit.store import drafts as store
from mailboxkit.store import outbox
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.drafts import DraftConflict, DraftContent, DraftRecord, DraftStatus
from mailboxkit.store.inboxes import InboxRecord, get_inbox, visible_inbox
from mailboxkit.store.listing import get_message

log = logging.getLogger(__name__)

router = APIRouter(
    tags=["drafts"], responses=s.AUTHENTICATED | s.error_responses(404, 409) | SUPPRESSED
)

DRAFT_EXAMPLE: dict[str, Any] = {
    "draft_id": s.DRAFT_ID,
    "inbox_id": s.INBOX_ID,
    "status": "scheduled",
    "send_at": "2026-11-29T08:00:00Z",
    "to": ["Alice <alice@example.org>"],
    "cc": [],
    "bcc": [],
    "reply_to": [],
    "subject": "Re: Invoice 42",
    "text": "Paid today.",
    "html": None,
    "headers": {},
    "labels": ["billing"],
    "in_reply_to": s.MESSAGE_ID,
    "attachments": [],
    "message_id": "0193a3c4-1a2b-7d3c-9e77-4b3a0f9c8d99",
    "sent_message_id": None,
    "thread_id": None,
    "error": None,
    "created_at": s.EXAMPLE_TIME,
    "updated_at": s.EXAMPLE_TIME,
    "sent_at": None,
}


class DraftAttachmentInfo(BaseModel):
    filename: str
    content_type: str
    size: int
    disposition: str
    content_id: str | None


Status = Literal["draft", "scheduled", "sent", "failed"]  # store.drafts.DraftStatus


class DraftOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [DRAFT_EXAMPLE]})
    draft_id: str
    inbox_id: str
    status: Status = Field(
        description="`draft`: being written; `scheduled`: sent at `send_at`; `sent`: queued "
        "(`sent_message_id`); `failed`: its scheduled send could not be queued (`error`)."
    )
    send_at: datetime | None
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    labels: list[str] = Field(description="Labels the Sent copy will get.")
    in_reply_to: str | None = Field(description="The message this draft replies to.")
    attachments: list[DraftAttachmentInfo]
    message_id: str | None = Field(
        description="The draft's copy in the Drafts folder (null once sent)."
    )
    sent_message_id: str | None = Field(description="The Sent copy, once sent.")
    thread_id: str | None
    error: str | None = Field(description="Why the scheduled send failed.")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class DraftList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"count": 1, "drafts": [DRAFT_EXAMPLE], "next_page_token": None}]
        }
    )
    count: int
    drafts: list[DraftOut]
    next_page_token: str | None


SendAt = Field(
    None,
    description="When to send it (UTC if no offset): in the future schedules it, now or in the "
    "past sends it at once, null keeps it a draft (or cancels the schedule).",
)


class DraftFields(BaseModel):
    to: Addresses | None = None
    cc: Addresses | None = None
    bcc: Addresses | None = None
    reply_to: Addresses | None = None
    subject: HeaderText | None = None
    text: BodyText | None = Field(None, description="The plain-text body.")
    html: BodyText | None = Field(None, description="The HTML body.")
    headers: dict[str, HeaderText] | None = Field(
        None, description="Extra header fields, e.g. X- headers (not From, To, Subject…)."
    )
    labels: list[s.Label] | None = Field(
        None, max_length=50, description="Labels of the Sent copy."
    )
    attachments: list[AttachmentIn] | None = Field(None, max_length=100)
    send_at: datetime | None = SendAt


class DraftCreate(DraftFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "to": ["Alice <alice@example.org>"],
                    "subject": "Invoice 42",
                    "text": "Hi Alice, the invoice is attached.",
                    "labels": ["billing"],
                }
            ]
        },
    )
    in_reply_to: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = Field(
        None,
        description='A message of this inbox to reply to: In-Reply-To, References, the "Re:" '
        "subject and the reply's recipients (unless given); \\Answered on it once sent.",
    )


class DraftUpdate(DraftFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Hi Alice, paid today.", "send_at": None}]},
    )


def _schema(d: DraftRecord) -> DraftOut:
    c = d.content
    return DraftOut(
        draft_id=d.id,
        inbox_id=d.inbox_id,
        status=d.status.value,
        send_at=d.send_at,
        to=list(c.to),
        cc=list(c.cc),
        bcc=list(c.bcc),
        reply_to=list(c.reply_to),
        subject=c.subject,
        text=c.text,
        html=c.html,
        headers=dict(c.headers),
        labels=list(c.labels),
        in_reply_to=d.reply_to_message_id,
        attachments=[
            DraftAttachmentInfo(
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                disposition=a.disposition,
                content_id=a.content_id,
            )
            for a in c.attachments
        ],
        message_id=d.message_id,
        sent_message_id=d.sent_message_id,
        thread_id=d.thread_id,
        error=d.error,
        created_at=d.created_at,
        updated_at=d.updated_at,
        sent_at=d.sent_at,
    )


def _listed(value: str | list[str] | None, field: str) -> tuple[str, ...]:
    """Addresses as written, each checked (422 naming ``field``)."""
    items = [value] if isinstance(value, str) else list(value or [])
    mailboxes_of(items, field)
    return tuple(" ".join(item.split()) for item in items)


def _send_at(ctx: ApiContext, send: SendContext, value: datetime | None) -> datetime | None:
    when = utc(value, "send_at")
    if when is not None and when > ctx.clock.now() + send.max_schedule:
        raise invalid("body.send_at", f"at most {send.max_schedule.days} days ahead")
    return when


def _changed(draft: DraftContent, body: DraftFields, attached: bool) -> DraftContent:
    """``draft`` with the fields ``body`` sets (a null clears)."""
    given = body.model_fields_set
    return DraftContent(
        to=_listed(body.to, "body.to") if "to" in given else draft.to,
        cc=_listed(body.cc, "body.cc") if "cc" in given else draft.cc,
        bcc=_listed(body.bcc, "body.bcc") if "bcc" in given else draft.bcc,
        reply_to=_listed(body.reply_to, "body.reply_to") if "reply_to" in given else draft.reply_to,
        subject=(body.subject or "") if "subject" in given else draft.subject,
        text=body.text if "text" in given else draft.text,
        html=body.html if "html" in given else draft.html,
        headers=extra_headers(body.headers) if "headers" in given else draft.headers,
        labels=tuple(dict.fromkeys(body.labels or ())) if "labels" in given else draft.labels,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
        attachments=() if attached else draft.attachments,
    )


async def _save(
    ctx: ApiContext,
    send: SendContext,
    inbox: InboxRecord,
    content: DraftContent,
    attachments: tuple[Attachment, ...],
    send_at: datetime | None,
) -> tuple[DraftContent, Any]:
    """Check what a scheduled draft needs, then stage its copy; the content with the copy's
    attachments, and the copy."""
    mail = mail_of(inbox, content, attachments)
    if send_at is not None:
        check_recipients(mail.recipients, send.max_recipients)
    copy, parsed = await stage_copy(ctx.blobs, send.offload, inbox, mail, ctx.clock.now())
    kept = store.content_of(parsed).attachments
    return DraftContent(**{**_fields(content), "attachments": kept}), copy


def _fields(content: DraftContent) -> dict[str, Any]:
    return {name: getattr(content, name) for name in DraftContent.__dataclass_fields__}


def _saved(ctx: ApiContext, send: SendContext, draft: DraftRecord) -> DraftOut:
    if ctx.changes is not None:
        ctx.changes.notify(draft.inbox_id)  # Drafts changed: IMAP IDLE
    if draft.status is DraftStatus.SCHEDULED:
        send.scheduled()
    return _schema(draft)


async def _inbox(ctx: ApiContext, owner: Principal, inbox_id: str) -> InboxRecord:
    async with ctx.db.read() as conn:
        inbox = await get_inbox(conn, owner.scope, inbox_id)
    if inbox is None:
        raise not_found("inbox")
    return inbox


async def _draft(ctx: ApiContext, owner: Principal, inbox_id: str, draft_id: str) -> DraftRecord:
    async with ctx.db.read() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        found = await store.get_draft(conn, inbox_id, draft_id)
    if found is None:
        raise not_found("draft")
    return found


def _already_sent() -> ApiError:
    return ApiError(409, "conflict", "the draft was sent; it cannot be changed or sent again")


def _moved() -> ApiError:
    return ApiError(409, "conflict", "the draft was sent or changed meanwhile; read it again")


@router.post(
    "/inboxes/{inbox_id}/drafts",
    response_model=DraftOut,
    status_code=201,
    summary="Create a draft",
    description="Saves a draft (every field optional) with a copy in the inbox's Drafts folder "
    "that IMAP clients see. `in_reply_to` makes it a reply to a message of the inbox. "
    "`send_at` schedules it; now or in the past sends it at once.",
)
async def create_draft(
    inbox_id: InboxId, body: DraftCreate, owner: Principal, ctx: Ctx, request: Request
) -> DraftOut:
    send = send_context(request)
    inbox = await _inbox(ctx, owner, inbox_id)
    content = _changed(DraftContent(), body, attached=True)
    if body.in_reply_to is not None:
        async with ctx.db.read() as conn:
            original = await get_message(conn, inbox_id, body.in_reply_to)
        if original is None:
            raise not_found("message")
        thread = reply_threading(original, own=inbox.address, reply_all=False)
        given = body.model_fields_set
        content = DraftContent(
            **{
                **_fields(content),
                "to": content.to if "to" in given else tuple(m.formatted() for m in thread.to),
                "subject": content.subject if "subject" in given else thread.subject,
                "in_reply_to": thread.in_reply_to,
                "references": thread.references,
            }
        )
    send_at = _send_at(ctx, send, body.send_at)
    attachments = attachments_of(body.attachments or [])
    content, copy = await _save(ctx, send, inbox, content, attachments, send_at)
    async with ctx.db.write() as conn:
        draft = await store.create_draft(
            conn,
            inbox=Inbox(inbox.id, inbox.account_id, inbox.address, inbox.display_name),
            content=content,
            copy=copy,
            now=ctx.clock.now(),
            send_at=send_at,
            reply_to_message_id=body.in_reply_to,
        )
    log.info("event=draft_created inbox_id=%s draft_id=%s", inbox.id, draft.id)
    return _saved(ctx, send, draft)


@router.get(
    "/inboxes/{inbox_id}/drafts",
    response_model=DraftList,
    summary="List an inbox's drafts",
    description="Newest first, paged by cursor. By default the drafts not sent yet (`draft`, "
    "`scheduled`, `failed`); `status` picks one status, `sent` included.",
)
async def list_inbox_drafts(
    inbox_id: InboxId,
    owner: Principal,
    ctx: Ctx,
    limit: Limit = 50,
    page_token: PageToken = None,
    status: Status | None = None,
) -> DraftList:
    return await _list(ctx, owner, inbox_id, limit, page_token, status)


@router.get(
    "/drafts",
    response_model=DraftList,
    summary="List the account's drafts",
    description="The drafts of every inbox the key sees (an inbox key: its inbox), newest "
    "first, paged by cursor; `status` as for an inbox's drafts.",
)
async def list_account_drafts(
    owner: Principal,
    ctx: Ctx,
    limit: Limit = 50,
    page_token: PageToken = None,
    status: Status | None = None,
) -> DraftList:
    return await _list(ctx, owner, None, limit, page_token, status)


async def _list(
    ctx: ApiContext,
    owner: Principal,
    inbox_id: str | None,
    limit: int,
    page_token: str | None,
    status: str | None,
) -> DraftList:
    statuses = [DraftStatus(status)] if status else sorted(store.EDITABLE)
    start = cursor(page_token)
    async with ctx.db.read() as conn:
        if inbox_id is not None and not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        found, more = await store.list_drafts(
            conn, owner.scope, inbox_id=inbox_id, statuses=statuses, limit=limit, cursor=start
        )
    return DraftList(
        count=len(found),
        drafts=[_schema(d) for d in found],
        next_page_token=more.encode() if more else None,
    )


@router.get(
    "/inboxes/{inbox_id}/drafts/{draft_id}",
    response_model=DraftOut,
    summary="Get a draft",
    description="The draft's fields, status and schedule; once sent, the Sent copy's id.",
)
async def get_draft(inbox_id: InboxId, draft_id: DraftId, owner: Principal, ctx: Ctx) -> DraftOut:
    return _schema(await _draft(ctx, owner, inbox_id, draft_id))


@router.patch(
    "/inboxes/{inbox_id}/drafts/{draft_id}",
    response_model=DraftOut,
    summary="Update a draft",
    description="Changes the fields given (null clears one; `attachments` replaces them all) "
    "and replaces the copy in Drafts. `send_at` schedules, reschedules or (null) cancels. A "
    "sent draft is 409.",
)
async def update_draft(
    inbox_id: InboxId,
    draft_id: DraftId,
    body: DraftUpdate,
    owner: Principal,
    ctx: Ctx,
    request: Request,
) -> DraftOut:
    send = send_context(request)
    draft = await _draft(ctx, owner, inbox_id, draft_id)
    if draft.status is DraftStatus.SENT:
        raise _already_sent()
    inbox = await _inbox(ctx, owner, inbox_id)
    attached = "attachments" in body.model_fields_set
    content = _changed(draft.content, body, attached)
    if attached:
        attachments = attachments_of(body.attachments or [])
    else:
        attachments = await stored_attachments(ctx.blobs, draft.content)
    given = body.model_fields_set
    send_at = _send_at(ctx, send, body.send_at) if "send_at" in given else draft.send_at
    content, copy = await _save(ctx, send, inbox, content, attachments, send_at)
    try:
        async with ctx.db.write() as conn:
            updated = await store.update_draft(
                conn, draft, content=content, copy=copy, send_at=send_at, now=ctx.clock.now()
            )
    except DraftConflict:
        raise _moved() from None
    return _saved(ctx, send, updated)


@router.delete(
    "/inboxes/{inbox_id}/drafts/{draft_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a draft",
    description="Deletes the draft and its copy in Drafts; a scheduled draft is not sent. A "
    "sent draft's record goes, the message it sent stays.",
)
async def delete_draft(
    inbox_id: InboxId, draft_id: DraftId, owner: Principal, ctx: Ctx
) -> Response:
    async with ctx.db.write() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        found = await store.delete_draft(conn, inbox_id, draft_id)
    if not found:
        raise not_found("draft")
    if ctx.changes is not None:
        ctx.changes.notify(inbox_id)
    return Response(status_code=204)


class _NoBody(BaseModel):
    """What ``…/send`` is sent with (nothing), for its idempotency fingerprint."""


@router.post(
    "/inboxes/{inbox_id}/drafts/{draft_id}/send",
    response_model=SendResponse,
    summary="Send a draft",
    description="Sends the draft now (a scheduled one too) as `messages/send` would and answers "
    "once it is durably queued: its copy leaves Drafts, the Sent copy is `message_id`. Takes "
    "`Idempotency-Key`. A draft already sent, or sent or changed during the request, is 409.",
)
async def send_inbox_draft(
    inbox_id: InboxId,
    draft_id: DraftId,
    owner: Principal,
    ctx: Ctx,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> SendResponse:
    send = send_context(request)
    draft = await _draft(ctx, owner, inbox_id, draft_id)
    key = idempotency(owner, idempotency_key, "draft-send", [inbox_id, draft_id], _NoBody())
    async with ctx.db.read() as conn:
        found = await find_answer(conn, key)
    if found is not None:
        return found
    if draft.status is DraftStatus.SENT:
        raise _already_sent()
    inbox = await _inbox(ctx, owner, inbox_id)
    try:
        queued = await send_draft(ctx.db, ctx.blobs, ctx.clock, send, inbox, draft, key=key)
    except outbox.NotQueued:
        raise _moved() from None
    log.info("event=draft_sent inbox_id=%s draft_id=%s", inbox_id, draft_id)
    return SendResponse(message_id=queued.message_id, thread_id=queued.thread_id)
