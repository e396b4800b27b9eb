"""Parameters shared by several routes: object ids, page size and token, times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query

from mailboxkit.api import schemas as s
from mailboxkit.api.errors import ApiError
from mailboxkit.store.listing import Cursor, InvalidCursor

ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"


def _id(example: str, what: str) -> object:
    return Path(pattern=ID_PATTERN, examples=[example], description=f"The {what}'s id.")


InboxId = Annotated[str, _id(s.INBOX_ID, "inbox")]
MessageId = Annotated[str, _id(s.MESSAGE_ID, "message")]
ThreadId = Annotated[str, _id(s.THREAD_ID, "thread")]
AttachmentId = Annotated[str, _id(s.ATTACHMENT_ID, "attachment")]
ApiKeyId = Annotated[str, _id(s.KEY_ID, "API key")]
DomainId = Annotated[str, _id(s.DOMAIN_ID, "domain")]
SenderRuleId = Annotated[str, _id(s.SENDER_RULE_ID, "sender rule")]
DraftId = Annotated[str, _id(s.DRAFT_ID, "draft")]

Limit = Annotated[int, Query(ge=1, le=100, description="Most items per page.", examples=[20])]
PageToken = Annotated[
    str | None,
    Query(
        max_length=500,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="`next_page_token` of the previous page.",
    ),
]


def cursor(token: str | None) -> Cursor | None:
    if not token:
        return None
    try:
        return Cursor.decode(token)
    except InvalidCursor:
        raise ApiError(
            422,
            "validation_error",
            "invalid page_token",
            fields=[{"field": "query.page_token", "message": "not a token from this listing"}],
        ) from None


def utc(value: datetime | None, field: str) -> datetime | None:
    """An aware UTC datetime (naive ones are taken as UTC)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ApiError(
            422,
            "validation_error",
            f"{field} is out of range",
            fields=[{"field": f"query.{field}", "message": "out of range"}],
        ) from None
