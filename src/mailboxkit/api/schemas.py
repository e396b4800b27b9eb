"""Request and response bodies of ``/api/v1``, each with an example for the OpenAPI document.

Names follow the hosted MailboxKit API: objects carry their id as ``<noun>_id``, addresses are
``{"name", "email"}``, lists carry ``count`` and ``next_page_token`` (null on the last page).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

# Strings stored in the database: PostgreSQL text cannot hold U+0000.
NO_NUL = r"^[^\x00]*$"
# IMAP keyword atoms (RFC 3501 §9 atom-specials excluded), which labels are stored as.
LABEL = r"^[^\x00-\x20\x7f(){%*\"\\\]]+$"
DOMAIN = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?$"
USERNAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$"

Label = Annotated[str, Field(min_length=1, max_length=64, pattern=LABEL)]

EXAMPLE_TIME = "2026-11-28T09:30:00Z"
ACCOUNT_ID = "0193a3c2-7d4e-7b1a-9c55-2f1e8d7a6b10"
INBOX_ID = "0193a3c2-7d4f-7c2b-8d66-3a2f9e8b7c21"
MESSAGE_ID = "0193a3c4-1a2b-7d3c-9e77-4b3a0f9c8d32"
THREAD_ID = "0193a3c4-1a2a-7e4d-af88-5c4b1a0d9e43"
ATTACHMENT_ID = "0193a3c4-1a2c-7f5e-b099-6d5c2b1e0f54"
KEY_ID = "0193a3c2-7d50-7a6f-81aa-7e6d3c2f1a65"
DOMAIN_ID = "0193a3c2-7d51-7b70-92bb-8f7e4d3a2b76"
SENDER_RULE_ID = "0193a3c2-7d52-7c81-a3cc-9a8f5e4b3c87"
DRAFT_ID = "0193a3c4-1a2d-7a6f-b1aa-7e6d3c2f1b01"


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]}, populate_by_name=True)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="Human-readable, generic explanation.")
    fields: list[dict[str, str]] | None = Field(
        None, description="For `validation_error`: each failing field and why."
    )


class Error(BaseModel):
    model_config = _example({"error": {"code": "not_found", "message": "inbox not found"}})
    error: ErrorBody


ERROR_DESCRIPTIONS = {
    401: "Missing, wrong or revoked API key (`unauthorized`).",
    403: "The key may not do this, e.g. an inbox key managing the account (`forbidden`); or "
    "an account limit the operator set, e.g. its inbox limit (`quota_exceeded`).",
    404: "No such object in this account (`not_found`); another account's ids are 404 too.",
    409: "Conflicts with an existing object (`conflict`).",
    413: "Request body over the server's limit (`payload_too_large`).",
    422: "Invalid parameters or body (`validation_error`, with `fields`).",
    429: "Rate limit reached (`rate_limited`), or the account's daily send limit "
    "(`quota_exceeded`); see the Retry-After header.",
    503: "The mail store is out of reach for now (`unavailable`); see the Retry-After header.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all in the one error shape."""
    return {s: {"model": Error, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


AUTHENTICATED = error_responses(401, 413, 422, 429, 503)


class Address(BaseModel):
    name: str = ""
    email: str


# Account and registration.


class RegisterRequest(BaseModel):
    model_config = _example({"name": "Support Bot", "owner_email": "ops@example.com"})
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    owner_email: EmailStr


class RegisterResponse(BaseModel):
    model_config = _example(
        {
            "api_key": "mbk_Xy12AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "email": "support-bot@example.com",
            "inbox_id": INBOX_ID,
            "owner_email": "ops@example.com",
            "message": "Keep the API key: it is shown only once.",
        }
    )
    api_key: str = Field(description="The account's API key, shown only this once.")
    email: str = Field(description="Address of the new inbox.")
    inbox_id: str
    owner_email: str
    message: str


class QuotaLimits(BaseModel):
    """The account's limits, set by the operator; null is unlimited."""

    storage_bytes: int | None = Field(
        description="Bytes of stored mail (a message in two folders counts twice)."
    )
    inboxes: int | None
    sends_per_day: int | None = Field(description="Messages sent per UTC day.")


class QuotaUsage(BaseModel):
    """What the account uses of its limits now."""

    storage_bytes: int
    inboxes: int
    sends_today: int = Field(description="Messages queued for sending today (UTC).")


class AccountQuota(BaseModel):
    limits: QuotaLimits
    used: QuotaUsage


_EXAMPLE_QUOTA = {
    "limits": {"storage_bytes": 1073741824, "inboxes": 10, "sends_per_day": 500},
    "used": {"storage_bytes": 52428800, "inboxes": 2, "sends_today": 12},
}


class Account(BaseModel):
    model_config = _example(
        {
            "account_id": ACCOUNT_ID,
            "name": "Support Bot",
            "owner_email": "ops@example.com",
            "status": "active",
            "created_at": EXAMPLE_TIME,
            "quota": _EXAMPLE_QUOTA,
        }
    )
    account_id: str
    name: str
    owner_email: str | None
    status: str
    created_at: datetime
    quota: AccountQuota


class AccountUpdate(BaseModel):
    model_config = _example({"name": "Support Bot (prod)"})
    name: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    owner_email: EmailStr | None = None


class Usage(BaseModel):
    model_config = _example(
        {
            "account_id": ACCOUNT_ID,
            "since": "2026-11-01T00:00:00Z",
            "until": "2026-12-01T00:00:00Z",
            "api_requests": 1234,
            "messages_received": 56,
            "messages_sent": 7,
            "quota": _EXAMPLE_QUOTA,
        }
    )
    account_id: str
    since: datetime
    until: datetime
    api_requests: int = Field(description="Authenticated API requests, by whole UTC days.")
    messages_received: int
    messages_sent: int
    quota: AccountQuota = Field(description="The account's limits and its use of them now.")


# API keys.


class ApiKeyCreate(BaseModel):
    model_config = _example({"name": "worker", "inbox_id": INBOX_ID})
    name: str = Field("", max_length=200, pattern=NO_NUL)
    inbox_id: str | None = Field(
        None, max_length=64, description="Limit the key to this inbox; omit for an account key."
    )


class ApiKey(BaseModel):
    model_config = _example(
        {
            "api_key_id": KEY_ID,
            "name": "worker",
            "prefix": "mbk_Xy12AbCd",
            "inbox_id": None,
            "created_at": EXAMPLE_TIME,
            "last_used_at": EXAMPLE_TIME,
            "revoked_at": None,
        }
    )
    api_key_id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognize it.")
    inbox_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    model_config = _example(
        {
            "api_key_id": KEY_ID,
            "api_key": "mbk_Xy12AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "name": "worker",
            "prefix": "mbk_Xy12AbCd",
            "inbox_id": None,
            "created_at": EXAMPLE_TIME,
            "last_used_at": None,
            "revoked_at": None,
        }
    )
    api_key: str = Field(description="The secret key, shown only this once.")


class ApiKeyList(BaseModel):
    model_config = _example({"count": 0, "api_keys": []})
    count: int
    api_keys: list[ApiKey]


# Domains.


class DomainCreate(BaseModel):
    model_config = _example({"domain": "agents.example.com"})
    domain: str = Field(pattern=DOMAIN, max_length=253)


class Domain(BaseModel):
    model_config = _example(
        {
            "domain_id": DOMAIN_ID,
            "domain": "agents.example.com",
            "shared": False,
            "verified": True,
            "verified_at": EXAMPLE_TIME,
            "dns_status": "verified",
            "dns_checked_at": EXAMPLE_TIME,
            "dns_failing_since": None,
            "catch_all_inbox_id": None,
            "inbox_count": 0,
            "created_at": EXAMPLE_TIME,
        }
    )
    domain_id: str
    domain: str
    shared: bool = Field(description="The operator's domain, usable by every account.")
    verified: bool = Field(description="The required DNS records have been right at least once.")
    verified_at: datetime | None
    dns_status: Literal["unverified", "verified", "failing"] = Field(
        description="unverified until the required records are all right once; then verified, "
        "or failing while a later check (the periodic re-check or `verify`) finds one of them "
        "missing or wrong."
    )
    dns_checked_at: datetime | None = Field(description="The last check of the DNS records.")
    dns_failing_since: datetime | None = Field(
        description="Since when a required record has been missing or wrong (failing only)."
    )
    catch_all_inbox_id: str | None = Field(
        description="The inbox that receives mail for addresses of the domain without an inbox."
    )
    inbox_count: int = Field(description="This account's inboxes on the domain.")
    created_at: datetime


class DomainUpdate(BaseModel):
    model_config = _example({"catch_all_inbox_id": INBOX_ID})
    catch_all_inbox_id: str | None = Field(
        None,
        max_length=64,
        description="An inbox of the account that receives mail for every address of the "
        "domain without an inbox (and postmaster@); null: none, such mail is refused. Omitted: "
        "unchanged.",
    )


class DomainList(BaseModel):
    model_config = _example({"count": 0, "domains": []})
    count: int
    domains: list[Domain]


# Inboxes.

Metadata = dict[str, Any]


class InboxCreate(BaseModel):
    model_config = _example(
        {
            "username": "support",
            "domain": "example.com",
            "display_name": "Support",
            "metadata": {"team": "billing"},
        }
    )
    username: str | None = Field(
        None, pattern=USERNAME, description="Local part; a random one when omitted."
    )
    domain: str | None = Field(
        None, pattern=DOMAIN, max_length=253, description="The server's domain when omitted."
    )
    display_name: str = Field("", max_length=200, pattern=NO_NUL)
    metadata: Metadata = Field(default_factory=dict)


class InboxUpdate(BaseModel):
    model_config = _example({"display_name": "Support (EU)", "metadata": {"team": "eu"}})
    display_name: str | None = Field(None, max_length=200, pattern=NO_NUL)
    metadata: Metadata | None = None


class Inbox(BaseModel):
    model_config = _example(
        {
            "inbox_id": INBOX_ID,
            "email": "support@example.com",
            "username": "support",
            "domain": "example.com",
            "display_name": "Support",
            "metadata": {"team": "billing"},
            "created_at": EXAMPLE_TIME,
        }
    )
    inbox_id: str
    email: str
    username: str
    domain: str
    display_name: str
    metadata: Metadata
    created_at: datetime


class InboxList(BaseModel):
    model_config = _example({"count": 0, "inboxes": [], "next_page_token": None})
    count: int
    inboxes: list[Inbox]
    next_page_token: str | None


# Messages.

MESSAGE_ITEM_EXAMPLE: dict[str, Any] = {
    "message_id": MESSAGE_ID,
    "inbox_id": INBOX_ID,
    "thread_id": THREAD_ID,
    "direction": "inbound",
    "from": {"name": "Alice", "email": "alice@example.org"},
    "to": [{"name": "", "email": "support@example.com"}],
    "cc": [],
    "subject": "Invoice 42",
    "preview": "Hi, please find the invoice attached.",
    "labels": ["billing"],
    "read": False,
    "has_attachments": True,
    "size": 48213,
    "received_at": EXAMPLE_TIME,
    "sent_at": EXAMPLE_TIME,
}


ATTACHMENT_EXAMPLE: dict[str, Any] = {
    "attachment_id": ATTACHMENT_ID,
    "filename": "invoice.pdf",
    "content_type": "application/pdf",
    "size": 40960,
    "disposition": "attachment",
    "content_id": None,
}


class AttachmentInfo(BaseModel):
    model_config = _example(ATTACHMENT_EXAMPLE)
    attachment_id: str
    filename: str | None
    content_type: str
    size: int
    disposition: str
    content_id: str | None


class AttachmentDownload(AttachmentInfo):
    model_config = _example(
        {
            **ATTACHMENT_EXAMPLE,
            "download_url": "https://mail.example.com/blobs/att/3f…?expires=1796031000&sig=…",
            "expires_at": "2026-11-28T10:30:00Z",
        }
    )
    download_url: str = Field(description="Works without the API key until `expires_at`.")
    expires_at: datetime


class MessageItem(BaseModel):
    model_config = _example(MESSAGE_ITEM_EXAMPLE)
    message_id: str
    inbox_id: str
    thread_id: str | None
    direction: Literal["inbound", "outbound"]
    from_: Address | None = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    subject: str
    preview: str
    labels: list[str]
    read: bool
    has_attachments: bool
    size: int
    received_at: datetime
    sent_at: datetime | None


class FoundLink(BaseModel):
    url: str
    text: str = Field(description="The link's anchor text, or the words before it in text.")


class Header(BaseModel):
    name: str
    value: str


class Message(MessageItem):
    model_config = _example(
        {
            **MESSAGE_ITEM_EXAMPLE,
            "reply_to": [],
            "text": "Hi, please find the invoice attached.\n",
            "html": None,
            "extracted_text": "Hi, please find the invoice attached.",
            "headers": [{"name": "Subject", "value": "Invoice 42"}],
            "internet_message_id": "<abc@example.org>",
            "in_reply_to": None,
            "references": [],
            "attachments": [ATTACHMENT_EXAMPLE],
            "auth": {"spf": "pass", "dkim": "pass", "dmarc": "pass"},
            "codes": [],
            "links": [],
        }
    )
    reply_to: list[Address]
    text: str | None
    html: str | None
    extracted_text: str = Field(description="The new text of the message, quoted history cut.")
    headers: list[Header]
    internet_message_id: str | None = Field(description="The Message-ID header.")
    in_reply_to: str | None
    references: list[str]
    attachments: list[AttachmentInfo]
    auth: dict[str, Any] | None = Field(description="SPF, DKIM and DMARC verdicts, if checked.")
    codes: list[str] = Field(
        default_factory=list,
        description="One-time codes found in the message (verification, sign-in), likeliest first.",
    )
    links: list[FoundLink] = Field(
        default_factory=list,
        description="Verification, sign-in, reset and invitation links found in the message.",
    )


class MessageList(BaseModel):
    model_config = _example(
        {"count": 1, "messages": [MESSAGE_ITEM_EXAMPLE], "next_page_token": "WyIyMDI2…"}
    )
    count: int
    messages: list[MessageItem]
    next_page_token: str | None


class MessageUpdate(BaseModel):
    model_config = _example({"add_labels": ["billing"], "remove_labels": ["todo"], "read": True})
    add_labels: list[Label] = Field(default_factory=list, max_length=50)
    remove_labels: list[Label] = Field(default_factory=list, max_length=50)
    read: bool | None = Field(None, description="Sets or clears \\Seen on every copy.")


# Threads.


class ThreadItem(BaseModel):
    model_config = _example(
        {
            "thread_id": THREAD_ID,
            "inbox_id": INBOX_ID,
            "subject": "Invoice 42",
            "participants": [{"name": "Alice", "email": "alice@example.org"}],
            "message_count": 2,
            "preview": "Thanks, received.",
            "created_at": EXAMPLE_TIME,
            "last_message_at": EXAMPLE_TIME,
        }
    )
    thread_id: str
    inbox_id: str
    subject: str
    participants: list[Address]
    message_count: int
    preview: str
    created_at: datetime
    last_message_at: datetime


class Thread(ThreadItem):
    model_config = _example(
        {
            "thread_id": THREAD_ID,
            "inbox_id": INBOX_ID,
            "subject": "Invoice 42",
            "participants": [{"name": "Alice", "email": "alice@example.org"}],
            "message_count": 1,
            "preview": "Hi, please find the invoice attached.",
            "created_at": EXAMPLE_TIME,
            "last_message_at": EXAMPLE_TIME,
            "messages": [],
        }
    )
    messages: list[Message] = Field(description="Oldest first.")


class ThreadList(BaseModel):
    model_config = _example({"count": 0, "threads": [], "next_page_token": None})
    count: int
    threads: list[ThreadItem]
    next_page_token: str | None
