"""``/inboxes/{inbox_id}/messages/{message_id}/deliveries``: where a sent message stands, per
recipient: queued (with the next attempt), sending, sent (the next hop took it), delivered
(the provider confirmed), bounced or complained, with the last reply."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import Principal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import not_found
from mailboxkit.api.params import InboxId, MessageId
from mailboxkit.store.delivery_log import delivery_log
from mailboxkit.store.inboxes import visible_inbox

router = APIRouter(tags=["sending"], responses=s.AUTHENTICATED | s.error_responses(404))

RECIPIENT_EXAMPLE: dict[str, Any] = {
    "email": "alice@example.org",
    "status": "bounced",
    "attempts": 1,
    "last_reply": "smtp; 550 5.1.1 user unknown",
    "updated_at": s.EXAMPLE_TIME,
    "next_attempt_at": None,
}


class RecipientDelivery(BaseModel):
    email: str
    status: Literal["queued", "sending", "sent", "delivered", "bounced", "complained"] = Field(
        description="`queued`: waiting for its next attempt; `sending`: being delivered; "
        "`sent`: the next hop accepted it; `delivered`: the provider (SES) confirmed the "
        "recipient's server took it; `bounced`: failed for good (a report is in INBOX, or the "
        "provider said so); `complained`: the recipient marked it as spam."
    )
    attempts: int
    last_reply: str = Field(description="The last SMTP reply or provider diagnostic.")
    updated_at: datetime
    next_attempt_at: datetime | None = Field(description="When `queued`: the next attempt.")


class Deliveries(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message_id": s.MESSAGE_ID,
                    "queued_at": s.EXAMPLE_TIME,
                    "expires_at": s.EXAMPLE_TIME,
                    "content_purged_at": None,
                    "recipients": [RECIPIENT_EXAMPLE],
                }
            ]
        }
    )
    message_id: str
    queued_at: datetime
    expires_at: datetime = Field(description="Temporary failures are retried until then.")
    content_purged_at: datetime | None = Field(
        description="When the queue let go of the message's content (retention); the log stays."
    )
    recipients: list[RecipientDelivery]


@router.get(
    "/inboxes/{inbox_id}/messages/{message_id}/deliveries",
    response_model=Deliveries,
    summary="Delivery status of a sent message",
    description="Each envelope recipient of a message sent from this inbox (API or SMTP "
    "submission), Bcc included, with its delivery status and last reply. 404 for a message "
    "that was not sent from here.",
)
async def get_deliveries(
    inbox_id: InboxId, message_id: MessageId, owner: Principal, ctx: Ctx
) -> Deliveries:
    async with ctx.db.read() as conn:
        if not await visible_inbox(conn, owner.scope, inbox_id):
            raise not_found("inbox")
        log = await delivery_log(conn, inbox_id, message_id)
    if log is None:
        raise not_found("sent message")
    return Deliveries(
        message_id=log.message_id,
        queued_at=log.queued_at,
        expires_at=log.expires_at,
        content_purged_at=log.purged_at,
        recipients=[
            RecipientDelivery(
                email=r.recipient,
                status=r.status.value,
                attempts=r.attempts,
                last_reply=r.last_reply,
                updated_at=r.updated_at,
                next_attempt_at=r.next_attempt_at,
            )
            for r in log.recipients
        ],
    )
