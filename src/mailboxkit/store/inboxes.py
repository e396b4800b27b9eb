"""Inboxes as the HTTP API sees them: scoped look-ups, changes, and deletion with its blobs.

Implementation notes:

- Every function takes a :class:`~mailboxkit.store.accounts.Scope`; an inbox outside it is
  reported exactly like a missing one (None), so the API answers 404 for both.
- Deleting an inbox deletes its rows by cascade (folders, entries, messages, attachments,
  threads, inbox-scoped keys) in the caller's transaction and returns the blob keys that no
  remaining row references: the caller deletes those *after* commit, with
  ``sweep.delete_unreferenced`` (raw blobs at once; content-addressed attachment blobs, which
  a delivery may be re-staging, only when older than an hour, else by the store sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Scope
from mailboxkit.store.quota import charge, inbox_bytes, lock_accounts
from mailboxkit.store.sweep import message_blobs, unreferenced_blobs


@dataclass(frozen=True, slots=True)
class InboxRecord:
    id: str
    account_id: str
    address: str
    local_part: str
    domain: str
    display_name: str
    metadata: dict[str, Any]
    created_at: datetime


def in_scope(scope: Scope) -> ColumnElement[bool]:
    """The inboxes ``scope`` may see."""
    condition = m.inboxes.c.account_id == scope.account_id
    if scope.inbox_id is not None:
        condition = and_(condition, m.inboxes.c.id == scope.inbox_id)
    return condition


def _query() -> Any:
    return select(
        m.inboxes.c.id,
        m.inboxes.c.account_id,
        m.inboxes.c.address,
        m.inboxes.c.local_part,
        m.domains.c.name.label("domain"),
        m.inboxes.c.display_name,
        m.inboxes.c.metadata,
        m.inboxes.c.created_at,
    ).join(m.domains, m.domains.c.id == m.inboxes.c.domain_id)


def _record(row: Any) -> InboxRecord:
    return InboxRecord(
        row.id,
        row.account_id,
        row.address,
        row.local_part,
        row.domain,
        row.display_name,
        dict(row.metadata or {}),
        row.created_at,
    )


async def visible_inbox(conn: AsyncConnection, scope: Scope, inbox_id: str) -> bool:
    found = await conn.scalar(
        select(m.inboxes.c.id).where(m.inboxes.c.id == inbox_id, in_scope(scope))
    )
    return found is not None


# Built once: every inbox-scoped request reads its inbox, and building the statement took
# longer than running it.
_BY_ID = _query().where(
    m.inboxes.c.id == bindparam("inbox_id"), m.inboxes.c.account_id == bindparam("account_id")
)


async def get_inbox(conn: AsyncConnection, scope: Scope, inbox_id: str) -> InboxRecord | None:
    if scope.inbox_id not in (None, inbox_id):
        return None
    params = {"inbox_id": inbox_id, "account_id": scope.account_id}
    row = (await conn.execute(_BY_ID, params)).first()
    return None if row is None else _record(row)


async def list_inboxes_page(
    conn: AsyncConnection, scope: Scope, *, limit: int, after_id: str | None
) -> tuple[list[InboxRecord], str | None]:
    """Newest first (ids are time-ordered); the id to continue after, when there is more."""
    query = _query().where(in_scope(scope))
    if after_id is not None:
        query = query.where(m.inboxes.c.id < after_id)
    rows = (await conn.execute(query.order_by(m.inboxes.c.id.desc()).limit(limit + 1))).all()
    records = [_record(r) for r in rows[:limit]]
    return records, (records[-1].id if len(rows) > limit else None)


async def update_inbox(
    conn: AsyncConnection, scope: Scope, inbox_id: str, changes: dict[str, Any]
) -> InboxRecord | None:
    """Change ``display_name`` and/or ``metadata`` (replaced whole)."""
    allowed = {k: v for k, v in changes.items() if k in ("display_name", "metadata")}
    if not await visible_inbox(conn, scope, inbox_id):
        return None
    if allowed:
        await conn.execute(update(m.inboxes).where(m.inboxes.c.id == inbox_id).values(**allowed))
    return await get_inbox(conn, scope, inbox_id)


async def delete_inbox(conn: AsyncConnection, scope: Scope, inbox_id: str) -> list[str] | None:
    """Delete the inbox and everything in it; the blob keys now unreferenced (None: no inbox)."""
    if not await visible_inbox(conn, scope, inbox_id):
        return None
    await lock_accounts(conn, [scope.account_id])  # before any folder: store.quota's lock order
    await charge(conn, {scope.account_id: -await inbox_bytes(conn, inbox_id)})
    keys = await message_blobs(conn, m.messages.c.inbox_id == inbox_id)
    # Messages first: their thread foreign key is SET NULL, which would otherwise be
    # rewritten row by row when the threads go.
    await conn.execute(delete(m.messages).where(m.messages.c.inbox_id == inbox_id))
    await conn.execute(delete(m.inboxes).where(m.inboxes.c.id == inbox_id))
    return await unreferenced_blobs(conn, keys)
