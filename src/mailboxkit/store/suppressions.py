"""The per-account suppression list: addresses an account does not send to.

Implementation notes:

- An address is added when mail to it bounces permanently (SES feedback, or a 5.1.x reply
  from the recipient's server), when its owner complains (SES feedback), or by the account
  (the API). Sending to a listed address is refused before anything is queued: the API
  answers 422 ``recipient_suppressed``, SMTP submission refuses the RCPT.
- Addresses are compared lowercased (whole address: no provider treats case as meaningful,
  whatever RFC 5321 §2.4 allows for local parts). Plus-tags are kept: they are other addresses.
- Adding is idempotent: the first reason stays (``ON CONFLICT DO NOTHING``); removing and
  adding again starts a new entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.db import upsert
from mailboxkit.store.listing import Cursor

CHUNK = 500  # addresses per IN (...) query


class SuppressionReason(StrEnum):
    BOUNCE = "bounce"  # a permanent bounce
    COMPLAINT = "complaint"  # the recipient marked the mail as spam
    MANUAL = "manual"  # added by the account


@dataclass(frozen=True, slots=True)
class Suppression:
    account_id: str
    address: str
    reason: SuppressionReason
    detail: str
    message_id: str | None  # the Sent copy whose delivery caused it
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewSuppression:
    address: str
    reason: SuppressionReason
    detail: str = ""
    message_id: str | None = None


def normalize(address: str) -> str:
    return address.strip().lower()


def _suppression(row: Any) -> Suppression:
    return Suppression(
        account_id=row.account_id,
        address=row.address,
        reason=SuppressionReason(row.reason),
        detail=row.detail,
        message_id=row.message_id,
        created_at=row.created_at,
    )


async def add(
    conn: AsyncConnection, account_id: str, items: Sequence[NewSuppression], *, now: datetime
) -> list[str]:
    """Add addresses to the account's list in the caller's transaction; those newly added."""
    rows = {
        normalize(i.address): {
            "account_id": account_id,
            "address": normalize(i.address),
            "reason": i.reason.value,
            "detail": i.detail[:2000],
            "message_id": i.message_id,
            "created_at": now,
        }
        for i in items
        if normalize(i.address)
    }
    if not rows:
        return []
    result = await conn.execute(
        upsert(conn, m.suppressions)
        .values(list(rows.values()))
        .on_conflict_do_nothing()
        .returning(m.suppressions.c.address)
    )
    return list(result.scalars())


async def remove(conn: AsyncConnection, account_id: str, address: str) -> bool:
    s = m.suppressions.c
    result = await conn.execute(
        delete(m.suppressions).where(s.account_id == account_id, s.address == normalize(address))
    )
    return result.rowcount > 0


async def get(conn: AsyncConnection, account_id: str, address: str) -> Suppression | None:
    s = m.suppressions.c
    row = (
        await conn.execute(
            select(m.suppressions).where(
                s.account_id == account_id, s.address == normalize(address)
            )
        )
    ).first()
    return None if row is None else _suppression(row)


# Built once: every send reads it.
_LISTED = select(m.suppressions.c.address).where(
    m.suppressions.c.account_id == bindparam("account_id"),
    m.suppressions.c.address.in_(bindparam("addresses", expanding=True)),
)


async def suppressed(conn: AsyncConnection, account_id: str, addresses: Iterable[str]) -> list[str]:
    """Those of ``addresses`` on the account's list (normalized), in the order given."""
    wanted = list(dict.fromkeys(normalize(a) for a in addresses))
    found: set[str] = set()
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        found.update(await conn.scalars(_LISTED, {"account_id": account_id, "addresses": chunk}))
    return [a for a in wanted if a in found]


async def list_page(
    conn: AsyncConnection, account_id: str, *, limit: int, after: Cursor | None
) -> tuple[list[Suppression], Cursor | None]:
    """Newest first, by (created_at, address); the cursor of the next page, if any."""
    s = m.suppressions.c
    query = select(m.suppressions).where(s.account_id == account_id)
    if after is not None:
        query = query.where(
            or_(s.created_at < after.at, and_(s.created_at == after.at, s.address < after.id))
        )
    query = query.order_by(s.created_at.desc(), s.address.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    found = [_suppression(r) for r in rows[:limit]]
    more = Cursor(found[-1].created_at, found[-1].address) if len(rows) > limit else None
    return found, more
