"""Deleting an account and all its data, as the privacy policy promises: the rows in one
transaction, then the blobs no other account's rows name.

Implementation notes:

- The rows go by the tables' ``ON DELETE CASCADE`` from ``accounts`` (SQLite enforces them:
  ``PRAGMA foreign_keys=ON``), messages first (see ``delete_account``).
- Blobs are shared: the raw blob of one SMTP transaction by its recipients (who may belong to
  other accounts), an attachment blob by every message with the same content. So only the
  blobs no row names after the commit are deleted (``sweep.delete_unreferenced``); attachment
  blobs written in the last hour are left to the store sweep, which also takes any blob left
  behind by a crash between the commit and the deletion.
- Other processes (the API key cache, MX routing) notice within their cache lifetimes; the
  process that deletes clears its own caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.accounts import get_account
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database
from mailboxkit.store.sweep import delete_unreferenced, message_blobs, unreferenced_blobs


class DomainShared(Exception):
    """Another account has inboxes on a domain of the account being deleted."""


async def domain_shared(conn: AsyncConnection, account_id: str) -> bool:
    """Whether another account has an inbox on one of the account's domains."""
    owned_domains = select(m.domains.c.id).where(m.domains.c.account_id == account_id)
    foreign = await conn.scalar(
        select(m.inboxes.c.id)
        .where(m.inboxes.c.domain_id.in_(owned_domains), m.inboxes.c.account_id != account_id)
        .limit(1)
    )
    return foreign is not None


async def delete_account(conn: AsyncConnection, account_id: str) -> list[str] | None:
    """Delete the account and everything it owns: its inboxes with their folders, threads and
    messages, its domains and their DKIM keys, keys, webhooks and their deliveries, events,
    queued and sent mail, drafts, sender rules, suppressions, usage, Stripe billing records (the
    tables' cascades).
    Returns the blob keys no row names any more, for the caller to delete after commit (see
    ``sweep.delete_unreferenced``); None when there is no such account.

    Raises :class:`DomainShared`, deleting nothing, when another account has an inbox on one
    of its domains (the cascade would take that inbox too).
    """
    if await get_account(conn, account_id) is None:
        return None
    if await domain_shared(conn, account_id):
        raise DomainShared(account_id)
    out = m.outbound_messages.c
    in_account = m.messages.c.inbox_id.in_(
        select(m.inboxes.c.id).where(m.inboxes.c.account_id == account_id)
    )
    keys = await message_blobs(conn, in_account)
    keys.update(
        await conn.scalars(
            select(out.raw_key).where(out.account_id == account_id, out.raw_key != "")
        )
    )
    # Messages first: their thread foreign key is SET NULL, which would otherwise be
    # rewritten row by row when the threads go.
    await conn.execute(delete(m.messages).where(in_account))
    await conn.execute(delete(m.accounts).where(m.accounts.c.id == account_id))
    return await unreferenced_blobs(conn, keys)


@dataclass(frozen=True, slots=True)
class Erased:
    """What deleting an account removed: its inboxes, and the blobs deleted at once."""

    inboxes: int
    blobs: int


async def erase_account(
    db: Database, blobs: BlobStore, account_id: str, *, now: datetime
) -> Erased | None:
    """Delete the account, all its rows and the blobs no one else uses (see the notes above);
    None when there is no such account. Raises :class:`DomainShared`."""
    async with db.write() as conn:
        inboxes = await conn.scalar(
            select(func.count()).select_from(m.inboxes).where(m.inboxes.c.account_id == account_id)
        )
        orphans = await delete_account(conn, account_id)
    if orphans is None:
        return None
    deleted = await delete_unreferenced(db, blobs, orphans, now=now) if orphans else []
    return Erased(int(inboxes or 0), len(deleted))
