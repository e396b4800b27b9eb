"""``/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}``: metadata and a
time-limited download URL that works without the API key (the blob store signs it)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import not_found
from mailboxkit.api.params import AttachmentId, InboxId, MessageId
from mailboxkit.store.blobs import MAX_URL_LIFETIME
from mailboxkit.store.inboxes import visible_inbox
from mailboxkit.store.listing import get_attachment

log = logging.getLogger(__name__)

router = APIRouter(tags=["attachments"], responses=s.AUTHENTICATED | s.error_responses(404))


@router.get(
    "/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}",
    response_model=s.AttachmentDownload,
    summary="Get an attachment",
    description="The attachment's metadata and a `download_url` that needs no API key and "
    "works until `expires_at` (after `expires_in` seconds; the server's default when "
    "omitted). Downloads are always served as attachments, never rendered.",
)
async def get_message_attachment(
    inbox_id: InboxId,
    message_id: MessageId,
    attachment_id: AttachmentId,
    owner: Principal,
    ctx: Ctx,
    expires_in: Annotated[
        int | None,
        Query(ge=1, le=MAX_URL_LIFETIME, description="Seconds the URL works.", examples=[600]),
    ] = None,
) -> s.AttachmentDownload:
    async with ctx.db.read() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        found = await get_attachment(conn, inbox_id, message_id, attachment_id)
    if found is None:
        raise not_found("attachment")
    lifetime = expires_in or ctx.config.download_url_ttl
    now = ctx.clock.now()
    filename = found.filename or f"attachment-{found.id}"
    try:
        url = ctx.blobs.signed_url(
            found.blob_key, expires_in=lifetime, filename=filename, content_type=found.content_type
        )
    except ValueError:
        # A content type unfit for a header: serve as bytes rather than fail.
        url = ctx.blobs.signed_url(found.blob_key, expires_in=lifetime, filename=filename)
    return s.AttachmentDownload(
        attachment_id=found.id,
        filename=found.filename,
        content_type=found.content_type,
        size=found.size,
        disposition=found.disposition,
        content_id=found.content_id,
        download_url=url,
        expires_at=datetime.fromtimestamp(int(now.timestamp()) + lifetime, UTC),
    )
