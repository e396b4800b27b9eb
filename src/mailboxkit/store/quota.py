"""Per-account quotas: stored bytes, inboxes, and messages sent per UTC day.

Implementation notes (invariants the MX, IMAP, submission and the API rely on):

- Limits are columns of ``accounts`` (``storage_limit``, ``inbox_limit``,
  ``daily_send_limit``); NULL is unlimited. New accounts take the server's defaults
  (``MAILBOXKIT_DEFAULT_*``, or with billing on the free plan's), the operator changes them
  with ``mailboxkit account limits``.
- Storage is the sum of ``messages.size`` over the account's *entries*: a message shown in two
  folders counts twice, as Dovecot and most IMAP servers count each copy (RFC 9208 §5.1:
  STORAGE is "the physical space estimate" of the mailboxes under the root; a COPY is a new
  message as far as the client can tell). A message in no folder (left for the store sweep)
  counts nothing. ``accounts.storage_used`` holds that sum: every statement that inserts or
  deletes entries changes it in the same transaction (:func:`charge`): ``insert_messages``,
  ``mailboxes`` (expunge, remove, copy, move, folder delete), ``inboxes.delete_inbox``; an
  account deleted takes its counter with it, and the store sweep deletes only messages with
  no entry. Checking is one primary-key read; ``tests/store/test_quota.py`` compares the
  counter with :func:`stored_bytes` after a mix of every kind of write.
- Lock order: a transaction that changes stored messages locks the account rows (``FOR NO KEY
  UPDATE`` on PostgreSQL, which does not block the key-share locks foreign keys take), all of
  them at once in id order when there are several (the delivery and outbox group commits,
  settling the queue), *before* any folder row and any send count. Folder-only changes
  (flags) never lock an account, so no cycle can form. SQLite has one writer and needs none
  of it.
- Enforcement: where mail comes into a mailbox (MX delivery, IMAP APPEND and COPY),
  :func:`lock_accounts` reads the locked usage and the caller refuses what would take it over
  the limit before writing, so two deliveries cannot both pass on the same free space: there
  is no overshoot. The queue worker's local deliveries (mail one of our inboxes sent to
  another) are checked the same way in the settling transaction
  (``mailserver.outbound.worker``). Copies the server makes of the account's own doing
  (Sent copies, drafts, bounce reports to it) are counted but never refused: they can take an
  account over its limit by what it sends itself, which the daily send limit bounds. MOVE
  within an account changes nothing and is always allowed, so a full account can tidy up.
- Sends are counted per message (not per recipient) in ``usage_counters.sends`` for the UTC day,
  checked and counted with one conditional UPDATE in the queueing transaction
  (:func:`count_send`): the limit is never passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.billing_settings import PlanLimits
from mailboxkit.store import models as m
from mailboxkit.store.db import upsert
from mailboxkit.store.usage import day_of  # the day column's format, as the API counts it


class QuotaExceeded(Exception):
    """An account limit refuses what was asked; nothing was written."""


class StorageQuotaExceeded(QuotaExceeded):
    """The message would take the account over its storage limit (SMTP 452 4.2.2, IMAP
    ``[OVERQUOTA]``): temporary, it fits again once mail is deleted."""


class InboxLimitReached(QuotaExceeded):
    """The account has as many inboxes as its limit allows."""


class SendQuotaExceeded(QuotaExceeded):
    """The account has sent as many messages today (UTC) as its limit allows; ``retry_at`` is
    when the next day starts."""

    def __init__(self, retry_at: datetime) -> None:
        super().__init__(f"daily send limit reached until {retry_at.isoformat()}")
        self.retry_at = retry_at


@dataclass(frozen=True, slots=True)
class Limits:
    """An account's limits; None is unlimited."""

    storage: int | None = None  # bytes
    inboxes: int | None = None
    sends_per_day: int | None = None

    @classmethod
    def of(cls, plan: PlanLimits) -> Limits:
        """The limits a plan of the settings gives."""
        return cls(plan.storage_quota, plan.inbox_limit, plan.daily_send_limit)


UNLIMITED = Limits()


@dataclass(frozen=True, slots=True)
class Storage:
    """An account's stored bytes and its limit (None: unlimited)."""

    used: int
    limit: int | None

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within the limit."""
        return self.limit is None or self.used + size <= self.limit

    def plus(self, size: int) -> Storage:
        """The storage once ``size`` more bytes are stored."""
        return Storage(self.used + size, self.limit)


@dataclass(frozen=True, slots=True)
class Quota:
    """An account's limits and what it uses of them, as the API and the CLI show them."""

    limits: Limits
    storage_used: int
    inboxes: int
    sends_today: int


def next_day(now: datetime) -> datetime:
    """The start of the UTC day after ``now``: when a day's send count starts again."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def limit_columns(limits: Limits) -> dict[str, int | None]:
    """The ``accounts`` columns of ``limits``."""
    return {
        "storage_limit": limits.storage,
        "inbox_limit": limits.inboxes,
        "daily_send_limit": limits.sends_per_day,
    }


async def lock_accounts(conn: AsyncConnection, account_ids: Iterable[str]) -> dict[str, Storage]:
    """Lock the accounts' rows in id order until commit (see the module notes) and read their
    storage. Call before locking any folder."""
    wanted = sorted(set(account_ids))
    if not wanted:
        return {}
    a = m.accounts.c
    query = select(a.id, a.storage_used, a.storage_limit).where(a.id.in_(wanted)).order_by(a.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
    rows = await conn.execute(query)
    return {row.id: Storage(int(row.storage_used), row.storage_limit) for row in rows}


async def charge(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    """Add ``deltas`` (bytes, negative to free) to the accounts' stored bytes, in id order."""
    for account_id in sorted(deltas):
        if deltas[account_id]:
            await conn.execute(
                update(m.accounts)
                .where(m.accounts.c.id == account_id)
                .values(storage_used=m.accounts.c.storage_used + deltas[account_id])
            )


async def folder_accounts(conn: AsyncConnection, folder_ids: Iterable[int]) -> list[str]:
    """The accounts the folders belong to."""
    rows = await conn.scalars(
        select(m.inboxes.c.account_id)
        .join(m.folders, m.folders.c.inbox_id == m.inboxes.c.id)
        .where(m.folders.c.id.in_(sorted(set(folder_ids))))
        .distinct()
    )
    return list(rows)


async def entry_bytes(conn: AsyncConnection, message_ids: Iterable[str]) -> int:
    """Bytes of one entry of each of ``message_ids`` (repeats count again)."""
    wanted = list(message_ids)
    if not wanted:
        return 0
    sizes: dict[str, int] = {}
    unique = sorted(set(wanted))
    for start in range(0, len(unique), 1000):
        rows = await conn.execute(
            select(m.messages.c.id, m.messages.c.size).where(
                m.messages.c.id.in_(unique[start : start + 1000])
            )
        )
        sizes.update((row.id, int(row.size)) for row in rows)
    return sum(sizes.get(i, 0) for i in wanted)


def _entry_bytes_where(condition: ColumnElement[bool]) -> Select[tuple[int]]:
    e, msg, f, i = m.entries.c, m.messages.c, m.folders.c, m.inboxes.c
    return (
        select(func.coalesce(func.sum(msg.size), 0))
        .select_from(
            m.entries.join(m.messages, msg.id == e.message_id)
            .join(m.folders, f.id == e.folder_id)
            .join(m.inboxes, i.id == f.inbox_id)
        )
        .where(condition)
    )


async def stored_bytes(conn: AsyncConnection, account_id: str) -> int:
    """The account's stored bytes counted from its entries (what ``storage_used`` must be)."""
    return int(await conn.scalar(_entry_bytes_where(m.inboxes.c.account_id == account_id)) or 0)


async def inbox_bytes(conn: AsyncConnection, inbox_id: str) -> int:
    """The bytes an inbox's entries count (freed when it is deleted)."""
    return int(await conn.scalar(_entry_bytes_where(m.inboxes.c.id == inbox_id)) or 0)


async def storage(conn: AsyncConnection, account_id: str) -> Storage | None:
    """The account's stored bytes and limit, unlocked (RCPT's early check)."""
    a = m.accounts.c
    row = (
        await conn.execute(select(a.storage_used, a.storage_limit).where(a.id == account_id))
    ).first()
    return None if row is None else Storage(int(row.storage_used), row.storage_limit)


async def count_send(conn: AsyncConnection, account_id: str, *, now: datetime) -> bool:
    """Count one message sent today, unless that passes the daily limit (then False, nothing
    counted). The row stays locked until commit, so concurrent sends cannot both take the
    last one."""
    u, a = m.usage_counters.c, m.accounts.c
    day = day_of(now)
    await conn.execute(
        upsert(conn, m.usage_counters)
        .values(account_id=account_id, day=day, api_requests=0, sends=0)
        .on_conflict_do_nothing()
    )
    limit = select(a.daily_send_limit).where(a.id == account_id).scalar_subquery()
    counted = await conn.scalar(
        update(m.usage_counters)
        .where(u.account_id == account_id, u.day == day, (limit.is_(None)) | (u.sends < limit))
        .values(sends=u.sends + 1)
        .returning(u.sends)
    )
    return counted is not None


async def may_send(conn: AsyncConnection, account_id: str, *, now: datetime) -> bool:
    """Whether the account may send one more message today (unlocked: an early check)."""
    u, a = m.usage_counters.c, m.accounts.c
    row = (
        await conn.execute(
            select(a.daily_send_limit, u.sends)
            .select_from(
                m.accounts.outerjoin(
                    m.usage_counters, (u.account_id == a.id) & (u.day == day_of(now))
                )
            )
            .where(a.id == account_id)
        )
    ).first()
    if row is None or row.daily_send_limit is None:
        return True
    return int(row.sends or 0) < int(row.daily_send_limit)


async def uncount_send(conn: AsyncConnection, account_id: str, *, now: datetime) -> None:
    """Take back a :func:`count_send` of this transaction (the message was not queued)."""
    u = m.usage_counters.c
    await conn.execute(
        update(m.usage_counters)
        .where(u.account_id == account_id, u.day == day_of(now), u.sends > 0)
        .values(sends=u.sends - 1)
    )


async def check_inbox_limit(conn: AsyncConnection, account_id: str) -> None:
    """Raise :class:`InboxLimitReached` when the account may have no more inboxes; locks the
    account row, so two creations cannot both take the last one."""
    await lock_accounts(conn, [account_id])
    limit = await conn.scalar(select(m.accounts.c.inbox_limit).where(m.accounts.c.id == account_id))
    if limit is None:
        return
    count = await conn.scalar(
        select(func.count()).select_from(m.inboxes).where(m.inboxes.c.account_id == account_id)
    )
    if int(count or 0) >= limit:
        raise InboxLimitReached(account_id)


async def get_quota(conn: AsyncConnection, account_id: str, *, now: datetime) -> Quota | None:
    """The account's limits and use (sends: today's, UTC)."""
    a = m.accounts.c
    row = (
        await conn.execute(
            select(a.storage_used, a.storage_limit, a.inbox_limit, a.daily_send_limit).where(
                a.id == account_id
            )
        )
    ).first()
    if row is None:
        return None
    inboxes = await conn.scalar(
        select(func.count()).select_from(m.inboxes).where(m.inboxes.c.account_id == account_id)
    )
    sends = await conn.scalar(
        select(m.usage_counters.c.sends).where(
            m.usage_counters.c.account_id == account_id, m.usage_counters.c.day == day_of(now)
        )
    )
    return Quota(
        Limits(row.storage_limit, row.inbox_limit, row.daily_send_limit),
        int(row.storage_used),
        int(inboxes or 0),
        int(sends or 0),
    )


async def set_limits(
    conn: AsyncConnection, account_id: str, changes: Mapping[str, int | None]
) -> bool:
    """Set some of ``storage_limit``, ``inbox_limit``, ``daily_send_limit``; False: no account."""
    allowed = {k: v for k, v in changes.items() if k in limit_columns(UNLIMITED)}
    result = await conn.execute(
        update(m.accounts).where(m.accounts.c.id == account_id).values(**allowed)
        if allowed
        else select(m.accounts.c.id).where(m.accounts.c.id == account_id)
    )
    if allowed:
        return bool(result.rowcount)
    return result.first() is not None
