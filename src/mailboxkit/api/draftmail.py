"""What a stored draft becomes: the message it sends, and its copy in the Drafts folder.

Shared by the draft routes (``api.drafts``) and the scheduler (``api.scheduler``). Sending goes
through ``send.queue_message`` like every API send, with ``store.drafts.SendDraft`` as the
queue hook, so a draft is queued at most once and leaves Drafts in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from email.errors import MessageError

from mailboxkit.api.compose import Attachment, Draft, compose
from mailboxkit.api.errors import ApiError
from mailboxkit.api.send import SendContext, mailboxes_of, queue_message, sender_of
from mailboxkit.store import outbox
from mailboxkit.store.accounts import Inbox
from mailboxkit.store.blobs import BlobNotFound, BlobStore
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database
from mailboxkit.store.drafts import DRAFTS, DraftContent, DraftRecord, SendDraft
from mailboxkit.store.inboxes import InboxRecord
from mailboxkit.store.messages import NewMessage
from mailboxkit.store.mime import ParsedMessage, parse_message
from mailboxkit.store.offload import Offload


async def stored_attachments(blobs: BlobStore, content: DraftContent) -> tuple[Attachment, ...]:
    """The draft's attachments with their bytes, read back from the blob store."""
    out = []
    for a in content.attachments:
        try:
            data = await blobs.get(a.blob_key)
        except BlobNotFound:
            raise ApiError(
                422, "validation_error", f"attachment {a.filename!r} is no longer stored"
            ) from None
        out.append(Attachment(a.filename, a.content_type, data, a.disposition, a.content_id))
    return tuple(out)


def mail_of(
    inbox: InboxRecord, content: DraftContent, attachments: tuple[Attachment, ...]
) -> Draft:
    """The message ``content`` stands for, from ``inbox``; 422 for an address it cannot send
    to."""
    return Draft(
        sender=sender_of(inbox),
        to=mailboxes_of(list(content.to), "body.to"),
        cc=mailboxes_of(list(content.cc), "body.cc"),
        bcc=mailboxes_of(list(content.bcc), "body.bcc"),
        reply_to=mailboxes_of(list(content.reply_to), "body.reply_to"),
        subject=content.subject,
        text=content.text,
        html=content.html,
        headers=content.headers,
        attachments=attachments,
        in_reply_to=content.in_reply_to,
        references=content.references,
    )


async def stage_copy(
    blobs: BlobStore, offload: Offload, inbox: InboxRecord, mail: Draft, now: datetime
) -> tuple[NewMessage, ParsedMessage]:
    """Compose the draft's copy for the Drafts folder (Bcc kept, not signed) and stage its
    blobs; the row to store and what it parsed to."""
    try:
        raw = await offload.run(
            mail.size, compose, mail, now=now, domain=inbox.domain, keep_bcc=True
        )
    except (MessageError, ValueError, TypeError, UnicodeError) as error:
        raise ApiError(422, "validation_error", f"the draft cannot be composed: {error}") from None
    parsed = await offload.run(len(raw), parse_message, raw)
    key = await outbox.stage(blobs, raw, parsed, at=now)
    copy = NewMessage(
        inbox=Inbox(inbox.id, inbox.account_id, inbox.address, inbox.display_name),
        parsed=parsed,
        raw_key=key,
        size=len(raw),
        received_at=now,
        attachment_keys=[outbox.attachment_key(a.sha256) for a in parsed.attachments],
        direction="outbound",
        folder=DRAFTS,
        envelope_from=inbox.address,
        seen=True,
    )
    return copy, parsed


async def send_draft(
    db: Database,
    blobs: BlobStore,
    clock: Clock,
    send: SendContext,
    inbox: InboxRecord,
    draft: DraftRecord,
    *,
    key: outbox.IdempotencyKey | None = None,
    due: bool = False,
) -> outbox.Queued:
    """Queue the draft as read (its ``version``). Raises :class:`ApiError` (it cannot be sent)
    and :class:`outbox.NotQueued` (sent or changed meanwhile)."""
    mail = mail_of(inbox, draft.content, await stored_attachments(blobs, draft.content))
    hook = SendDraft(draft.id, draft.version, clock.now(), due=due)
    return await queue_message(
        db, clock, send, inbox, mail, labels=draft.content.labels, key=key, hook=hook
    )
