"""Sending: ``/inboxes/{inbox_id}/messages/send`` and a message's ``reply``, ``reply-all`` and
``forward``.

Implementation notes:

- The API never delivers: it composes the message (``compose``), DKIM-signs it
  (``dns.signing``), and queues it with its Sent copy in one transaction
  (``store.outbox.submit``). The 2xx comes only after that commit; the queue worker delivers.
- ``Idempotency-Key``: the first request with a key is remembered per account with a hash of
  the route, the ids in the path and the body. A repeat with the same request answers the
  original ``message_id``/``thread_id`` and sends nothing, even when both arrive at once; a
  repeat with another request is a 409.
- Recipients: To, Cc and Bcc together, at least one and at most the server's limit; Bcc is in
  the envelope only. Addresses are ``a@b`` or ``Name <a@b>``.
- Recipients on the account's suppression list (``store.suppressions``) are refused with 422
  ``recipient_suppressed`` naming them; nothing is queued.
- Past the account's daily send limit (``store.quota``, counted per message when it is queued)
  a send is 429 ``quota_exceeded`` with ``Retry-After`` (seconds to 00:00 UTC); nothing is
  queued.
- Anything that cannot be composed (a header the email package refuses, a non-ASCII address)
  is a 422, never a 500.
- A reply (or reply-all) marks its original ``\\Answered`` and a forward ``$Forwarded``, in the
  transaction that queues it (``store.answered``). Drafts queue through
  :func:`queue_message` too (``api.drafts``, ``api.scheduler``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import MessageError
from email.utils import parseaddr
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.compose import (
    RESERVED_HEADERS,
    Attachment,
    Draft,
    Mailbox,
    compose,
    forward_threading,
    forwarded_html,
    forwarded_text,
    reply_threading,
    valid_address,
)
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import InboxId, MessageId
from mailboxkit.dns.signing import DkimSigner
from mailboxkit.store import outbox, quota, suppressions
from mailboxkit.store.accounts import Inbox, KeyOwner
from mailboxkit.store.answered import Answer, MarkOriginal
from mailboxkit.store.blobs import BlobNotFound
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.inboxes import InboxRecord, get_inbox
from mailboxkit.store.listing import MessageRecord, get_message
from mailboxkit.store.mime import parse_message
from mailboxkit.store.offload import Offload

MAX_ATTACHMENTS = 100
MAX_HEADERS = 50


@dataclass(frozen=True, slots=True)
class SendContext:
    """What sending needs beyond :class:`~mailboxkit.api.context.ApiContext`; the composition
    root puts it in ``app.state.send``."""

    signer: DkimSigner
    outbox: outbox.OutboxWriter
    offload: Offload  # composing and parsing large messages
    max_recipients: int = 50
    queued: Callable[[str], None] = lambda _inbox_id: None  # wakes the worker, rings IMAP
    scheduled: Callable[[], None] = lambda: None  # a draft was scheduled: wakes the scheduler
    max_schedule: timedelta = timedelta(days=365)  # how far ahead send_at may be


def send_context(request: Request) -> SendContext:
    found = getattr(request.app.state, "send", None)
    if not isinstance(found, SendContext):
        raise ApiError(503, "unavailable", "sending is not configured on this server")
    return found


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


OneLine = r"^[^\x00\r\n]*$"
HeaderText = Annotated[str, Field(max_length=998, pattern=OneLine), AfterValidator(_utf8)]
BodyText = Annotated[str, Field(pattern=s.NO_NUL), AfterValidator(_utf8)]
AddressText = Annotated[
    str, Field(min_length=3, max_length=400, pattern=OneLine), AfterValidator(_utf8)
]
Addresses = AddressText | Annotated[list[AddressText], Field(max_length=1000)]
MEDIA_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: Annotated[
        str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    ] = Field(examples=["invoice.pdf"])
    content_type: Annotated[str, Field(pattern=MEDIA_TYPE)] = "application/octet-stream"
    content: str = Field(description="The file's bytes, base64.", examples=["JVBERi0xLjQK"])
    disposition: Literal["attachment", "inline"] = "attachment"
    content_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@$+-]{1,200}$")] | None = Field(
        None, description="For inline parts referenced as cid: from the HTML."
    )


class _Common(BaseModel):
    text: BodyText | None = Field(None, description="The plain-text body.")
    html: BodyText | None = Field(None, description="The HTML body.")
    headers: dict[str, HeaderText] | None = Field(
        None, description="Extra header fields, e.g. X- headers (not From, To, Subject…)."
    )
    labels: list[s.Label] = Field(
        default_factory=list, max_length=50, description="Labels of the Sent copy."
    )
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class SendRequest(_Common):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "to": ["Alice <alice@example.org>"],
                    "subject": "Invoice 42",
                    "text": "Hi Alice, the invoice is attached.",
                    "labels": ["billing"],
                    "attachments": [
                        {
                            "filename": "invoice.pdf",
                            "content_type": "application/pdf",
                            "content": "JVBERi0xLjQK",
                        }
                    ],
                }
            ]
        },
    )
    to: Addresses | None = None
    cc: Addresses | None = None
    bcc: Addresses | None = None
    reply_to: Addresses | None = None
    subject: HeaderText = ""


class ReplyRequest(_Common):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Thanks, paid today.", "labels": ["done"]}]},
    )
    to: Addresses | None = Field(None, description="Replaces the recipients the reply would get.")
    cc: Addresses | None = Field(None, description="Added to the Cc the reply would get.")
    bcc: Addresses | None = None


class ForwardRequest(_Common):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"to": ["bob@example.org"], "text": "Bob, can you handle this?"}]
        },
    )
    to: Addresses
    cc: Addresses | None = None
    bcc: Addresses | None = None
    subject: HeaderText | None = Field(None, description="Default: Fwd: and the original's.")


class SendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message_id": s.MESSAGE_ID, "thread_id": s.THREAD_ID}]}
    )
    message_id: str = Field(description="The Sent copy; delivery continues in the background.")
    thread_id: str


IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Makes retries safe: the same key and request send once.",
    ),
]

SUPPRESSED: dict[int | str, dict[str, Any]] = {
    422: {
        "model": s.Error,
        "description": "Invalid body (`validation_error`), or a recipient is on the account's "
        "suppression list (`recipient_suppressed`, naming it).",
    }
}
router = APIRouter(
    tags=["sending"], responses=s.AUTHENTICATED | s.error_responses(404, 409) | SUPPRESSED
)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        f"invalid request: {field}",
        fields=[{"field": field, "message": message}],
    )


def mailboxes_of(value: str | list[str] | None, field: str) -> tuple[Mailbox, ...]:
    items = [value] if isinstance(value, str) else (value or [])
    out = []
    for item in items:
        name, email = parseaddr(item)
        if not valid_address(email):
            raise invalid(field, f"not an email address: {item[:100]!r}")
        out.append(Mailbox(" ".join(name.split()), email))
    return tuple(out)


def attachments_of(items: list[AttachmentIn]) -> tuple[Attachment, ...]:
    out = []
    for index, a in enumerate(items):
        try:
            data = base64.b64decode(a.content, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"body.attachments.{index}.content", "not base64") from None
        out.append(
            Attachment(a.filename, a.content_type.lower(), data, a.disposition, a.content_id)
        )
    return tuple(out)


def extra_headers(headers: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    items = list((headers or {}).items())
    if len(items) > MAX_HEADERS:
        raise invalid("body.headers", f"at most {MAX_HEADERS} headers")
    for name, _ in items:
        if not HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            raise invalid("body.headers", f"header {name[:80]!r} cannot be set")
    return tuple(items)


def _fingerprint(route: str, ids: list[str], body: BaseModel) -> str:
    data = json.dumps([route, ids, body.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


Composer = Callable[[InboxRecord, MessageRecord | None], Awaitable[Draft]]


async def _queue(
    ctx: Ctx,
    send: SendContext,
    owner: KeyOwner,
    inbox_id: str,
    message_id: str | None,
    body: _Common,
    idempotency_key: str | None,
    route: str,
    make: Composer,
    answer: Answer | None = None,
) -> SendResponse:
    async with ctx.db.read() as conn:
        inbox = await get_inbox(conn, owner.scope, inbox_id)
        if inbox is None:
            raise not_found("inbox")
        original = None
        if message_id is not None:
            original = await get_message(conn, inbox_id, message_id)
            if original is None:
                raise not_found("message")
        key = idempotency(owner, idempotency_key, route, [inbox_id, message_id or ""], body)
        found = await find_answer(conn, key)
        if found is not None:
            return found
    draft = await make(inbox, original)
    hook = None if message_id is None or answer is None else MarkOriginal(message_id, answer)
    queued = await queue_message(
        ctx.db, ctx.clock, send, inbox, draft, labels=body.labels, key=key, hook=hook
    )
    return SendResponse(message_id=queued.message_id, thread_id=queued.thread_id)


def idempotency(
    owner: KeyOwner, header: str | None, route: str, ids: list[str], body: BaseModel
) -> outbox.IdempotencyKey | None:
    """The idempotency key of a request with an ``Idempotency-Key`` header."""
    if header is None:
        return None
    return outbox.IdempotencyKey(owner.account_id, header, _fingerprint(route, ids, body))


async def find_answer(
    conn: AsyncConnection, key: outbox.IdempotencyKey | None
) -> SendResponse | None:
    """The answer a request with ``key`` got before; a 409 when it was another request."""
    if key is None:
        return None
    try:
        found = await outbox.find_idempotent(conn, key)
    except outbox.IdempotencyConflict:
        raise _conflict() from None
    return (
        None
        if found is None
        else SendResponse(message_id=found.message_id, thread_id=found.thread_id)
    )


def check_recipients(recipients: list[str], max_recipients: int) -> None:
    if not recipients:
        raise invalid("body.to", "at least one recipient (to, cc or bcc) is required")
    if len(recipients) > max_recipients:
        raise invalid("body.to", f"at most {max_recipients} recipients in all")


async def queue_message(
    db: Database,
    clock: Clock,
    send: SendContext,
    inbox: InboxRecord,
    draft: Draft,
    *,
    labels: Sequence[str],
    key: outbox.IdempotencyKey | None = None,
    hook: outbox.QueueHook | None = None,
) -> outbox.Queued:
    """Check, compose, sign and queue ``draft`` from ``inbox``; returns once it is durably
    queued. Raises :class:`ApiError` (422 or 409) and :class:`outbox.NotQueued` (the hook
    refused)."""
    recipients = draft.recipients
    check_recipients(recipients, send.max_recipients)
    async with db.read() as conn:
        listed = await suppressions.suppressed(conn, inbox.account_id, recipients)
    if listed:
        raise suppressed_error(listed)
    now = clock.now()
    try:
        raw = await send.offload.run(draft.size, compose, draft, now=now, domain=inbox.domain)
    except (MessageError, ValueError, TypeError, UnicodeError) as error:
        raise ApiError(
            422, "validation_error", f"the message cannot be composed: {error}"
        ) from None
    signed = await send.signer.sign(raw, inbox.domain)
    outgoing = outbox.Outgoing(
        inbox=Inbox(inbox.id, inbox.account_id, inbox.address, inbox.display_name),
        raw=signed,
        parsed=await send.offload.run(len(signed), parse_message, signed),
        envelope_from=inbox.address,
        recipients=recipients,
        labels=tuple(dict.fromkeys(labels)),
    )
    try:
        queued = await send.outbox.submit(outgoing, now=now, idempotency=key, hook=hook)
    except outbox.IdempotencyConflict:
        raise _conflict() from None
    except quota.SendQuotaExceeded as refused:
        raise send_limit_error(refused, now) from None
    if not queued.replayed:
        send.queued(inbox.id)
    return queued


def suppressed_error(addresses: list[str]) -> ApiError:
    named = ", ".join(addresses[:10])
    return ApiError(
        422,
        "recipient_suppressed",
        f"not sent: on this account's suppression list: {named} (it bounced, complained or was "
        "added; DELETE /api/v1/suppressions/{address} to send to it again)",
    )


def send_limit_error(refused: quota.SendQuotaExceeded, now: datetime) -> ApiError:
    """429 ``quota_exceeded``: the account's daily send limit is reached until the next UTC
    day (``Retry-After``, seconds)."""
    wait = max(1, math.ceil((refused.retry_at - now).total_seconds()))
    return ApiError(
        429,
        "quota_exceeded",
        "not sent: this account's daily send limit is reached; it starts again at 00:00 UTC",
        headers={"Retry-After": str(wait)},
    )


def _conflict() -> ApiError:
    return ApiError(
        409, "conflict", "this Idempotency-Key was used with another request; use a new key"
    )


def sender_of(inbox: InboxRecord) -> Mailbox:
    return Mailbox(inbox.display_name, inbox.address)


@router.post(
    "/inboxes/{inbox_id}/messages/send",
    response_model=SendResponse,
    summary="Send a message",
    description="Composes, DKIM-signs and queues a message from the inbox; answers once it is "
    "durably queued (a copy is in Sent). Delivery happens in the background: `message.sent` "
    "when the next hop accepts it, `message.bounced` (and a report in INBOX) if it cannot.",
)
async def send_message(
    inbox_id: InboxId,
    body: SendRequest,
    owner: Principal,
    ctx: Ctx,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> SendResponse:
    send = send_context(request)

    async def make(inbox: InboxRecord, _original: MessageRecord | None) -> Draft:
        return Draft(
            sender=sender_of(inbox),
            to=mailboxes_of(body.to, "body.to"),
            cc=mailboxes_of(body.cc, "body.cc"),
            bcc=mailboxes_of(body.bcc, "body.bcc"),
            reply_to=mailboxes_of(body.reply_to, "body.reply_to"),
            subject=body.subject,
            text=body.text,
            html=body.html,
            headers=extra_headers(body.headers),
            attachments=attachments_of(body.attachments),
        )

    return await _queue(ctx, send, owner, inbox_id, None, body, idempotency_key, "send", make)


async def _reply(
    ctx: Ctx,
    request: Request,
    owner: KeyOwner,
    inbox_id: str,
    message_id: str,
    body: ReplyRequest,
    idempotency_key: str | None,
    *,
    reply_all: bool,
) -> SendResponse:
    send = send_context(request)

    async def make(inbox: InboxRecord, original: MessageRecord | None) -> Draft:
        assert original is not None
        thread = reply_threading(original, own=inbox.address, reply_all=reply_all)
        to = mailboxes_of(body.to, "body.to") if body.to is not None else thread.to
        return Draft(
            sender=sender_of(inbox),
            to=to,
            cc=(*(thread.cc if body.to is None else ()), *mailboxes_of(body.cc, "body.cc")),
            bcc=mailboxes_of(body.bcc, "body.bcc"),
            subject=thread.subject,
            text=body.text,
            html=body.html,
            headers=extra_headers(body.headers),
            attachments=attachments_of(body.attachments),
            in_reply_to=thread.in_reply_to,
            references=thread.references,
        )

    route = "reply-all" if reply_all else "reply"
    return await _queue(
        ctx, send, owner, inbox_id, message_id, body, idempotency_key, route, make, Answer.REPLY
    )


@router.post(
    "/inboxes/{inbox_id}/messages/{message_id}/reply",
    response_model=SendResponse,
    summary="Reply to a message",
    description="Replies to the sender (its Reply-To if it has one) with In-Reply-To and the "
    "full References chain, so the reply joins the thread here and in the recipient's client. "
    "`to` replaces the recipients; `cc` adds to them.",
)
async def reply(
    inbox_id: InboxId,
    message_id: MessageId,
    body: ReplyRequest,
    owner: Principal,
    ctx: Ctx,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> SendResponse:
    return await _reply(
        ctx, request, owner, inbox_id, message_id, body, idempotency_key, reply_all=False
    )


@router.post(
    "/inboxes/{inbox_id}/messages/{message_id}/reply-all",
    response_model=SendResponse,
    summary="Reply to everyone",
    description="Like reply, with the original's To and Cc (except this inbox) in Cc.",
)
async def reply_all(
    inbox_id: InboxId,
    message_id: MessageId,
    body: ReplyRequest,
    owner: Principal,
    ctx: Ctx,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> SendResponse:
    return await _reply(
        ctx, request, owner, inbox_id, message_id, body, idempotency_key, reply_all=True
    )


@router.post(
    "/inboxes/{inbox_id}/messages/{message_id}/forward",
    response_model=SendResponse,
    summary="Forward a message",
    description="Sends the message on to new recipients: your text first, then the original "
    "quoted, with its attachments. The forward stays in the original's thread here.",
)
async def forward(
    inbox_id: InboxId,
    message_id: MessageId,
    body: ForwardRequest,
    owner: Principal,
    ctx: Ctx,
    request: Request,
    idempotency_key: IdempotencyHeader = None,
) -> SendResponse:
    send = send_context(request)

    async def make(inbox: InboxRecord, original: MessageRecord | None) -> Draft:
        assert original is not None
        thread = forward_threading(original)
        carried = []
        for a in original.attachments:
            try:
                data = await ctx.blobs.get(a.blob_key)
            except BlobNotFound:
                continue
            carried.append(
                Attachment(
                    a.filename or "attachment",
                    a.content_type,
                    data,
                    "inline" if a.disposition == "inline" and a.content_id else "attachment",
                    a.content_id,
                )
            )
        html = None
        if body.html is not None or original.html is not None:
            html = forwarded_html(original, body.html, body.text)
        return Draft(
            sender=sender_of(inbox),
            to=mailboxes_of(body.to, "body.to"),
            cc=mailboxes_of(body.cc, "body.cc"),
            bcc=mailboxes_of(body.bcc, "body.bcc"),
            subject=body.subject if body.subject is not None else thread.subject,
            text=forwarded_text(original, body.text),
            html=html,
            headers=extra_headers(body.headers),
            attachments=(*attachments_of(body.attachments), *carried),
            in_reply_to=thread.in_reply_to,
            references=thread.references,
        )

    return await _queue(
        ctx,
        send,
        owner,
        inbox_id,
        message_id,
        body,
        idempotency_key,
        "forward",
        make,
        Answer.FORWARD,
    )
