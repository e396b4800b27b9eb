"""An event as it goes out (webhook body, SSE data): the stored payload made ready to send.

- Attachments are never inlined: each gets its ``attachment_id`` and a time-limited
  ``download_url`` signed at send time (a retry hours later carries a fresh link).
- The body is capped at ``max_size`` bytes: past it, the long fields (``extracted_text``,
  ``preview``, ``links``, the attachment list) are cut, ``truncated`` is set, and
  ``message_url`` points at the API route with the whole message.
- Keys are kept in insertion order and the JSON is compact, UTF-8, one line (SSE needs that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.listing import attachments_of

API_PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    base_url: str = ""  # where clients reach the API; "" gives relative links
    max_size: int = 256 * 1024
    url_ttl: int = 3600


def message_url(base_url: str, inbox_id: str, message_id: str) -> str:
    return f"{base_url}{API_PREFIX}/inboxes/{inbox_id}/messages/{message_id}"


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


async def with_download_urls(
    conn: AsyncConnection,
    blobs: BlobStore,
    payload: dict[str, Any],
    *,
    ttl: int,
    now: datetime,
) -> dict[str, Any]:
    """The payload with each attachment's id and a signed ``download_url``."""
    data = payload.get("data")
    if not isinstance(data, dict) or not data.get("attachments") or not data.get("message_id"):
        return payload
    stored = (await attachments_of(conn, [str(data["message_id"])])).get(
        str(data["message_id"]), []
    )
    expires = datetime.fromtimestamp(int(now.timestamp()) + ttl, UTC).isoformat()
    items = []
    for index, item in enumerate(data["attachments"]):
        item = dict(item)
        if index < len(stored):
            a = stored[index]
            filename = a.filename or f"attachment-{a.id}"
            try:
                url = blobs.signed_url(
                    a.blob_key, expires_in=ttl, filename=filename, content_type=a.content_type
                )
            except ValueError:
                url = blobs.signed_url(a.blob_key, expires_in=ttl, filename=filename)
            item.update(attachment_id=a.id, download_url=url, expires_at=expires)
        items.append(item)
    return {**payload, "data": {**data, "attachments": items}}


def capped(payload: dict[str, Any], limits: PayloadLimits) -> bytes:
    """The JSON body, cut to ``limits.max_size`` with a pointer to the rest (see above)."""
    body = dumps(payload)
    data = payload.get("data")
    if len(body) <= limits.max_size or not isinstance(data, dict):
        return body
    data = dict(data)
    data["truncated"] = True
    if data.get("inbox_id") and data.get("message_id"):
        data["message_url"] = message_url(
            limits.base_url, str(data["inbox_id"]), str(data["message_id"])
        )
    for field in ("extracted_text", "links", "attachments", "preview", "to", "cc", "subject"):
        if field in data:
            value = data[field]
            data[field] = value[:200] if isinstance(value, str) else []
            body = dumps({**payload, "data": data})
            if len(body) <= limits.max_size:
                return body
    return dumps(
        {
            **payload,
            "data": {
                k: data[k]
                for k in ("message_id", "inbox_id", "thread_id", "truncated", "message_url")
                if k in data
            },
        }
    )
