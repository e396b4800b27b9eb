"""Domains as the HTTP API sees them: an account's own, plus the operator's shared ones.

A domain row with ``account_id`` NULL belongs to the operator (the default domain): every
account may create inboxes on it, none may change or delete it. An account's own domain is
invisible to every other account. Domain names are unique across the server, because the MX
must know which inboxes a domain's mail goes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id


class DomainTaken(Exception):
    """A domain of that name exists already (this account's, another's or the operator's)."""


class DomainInUse(Exception):
    """The domain still has inboxes; they must be deleted first."""


@dataclass(frozen=True, slots=True)
class Domain:
    id: str
    name: str
    account_id: str | None  # None: the operator's, shared by every account
    created_at: datetime
    verified_at: datetime | None
    inbox_count: int


def visible_to(account_id: str) -> ColumnElement[bool]:
    """Domains ``account_id`` may use: its own and the operator's."""
    return or_(m.domains.c.account_id == account_id, m.domains.c.account_id.is_(None))


def _query(account_id: str) -> Any:
    # Only this account's inboxes count, even on a shared domain.
    count = (
        select(func.count())
        .where(m.inboxes.c.domain_id == m.domains.c.id, m.inboxes.c.account_id == account_id)
        .scalar_subquery()
    )
    return select(m.domains, count.label("inbox_count")).where(visible_to(account_id))


def _domain(row: Any) -> Domain:
    return Domain(
        row.id, row.name, row.account_id, row.created_at, row.verified_at, int(row.inbox_count)
    )


async def list_domains(conn: AsyncConnection, account_id: str) -> list[Domain]:
    rows = await conn.execute(_query(account_id).order_by(m.domains.c.name))
    return [_domain(r) for r in rows]


async def get_domain(conn: AsyncConnection, account_id: str, domain_id: str) -> Domain | None:
    row = (await conn.execute(_query(account_id).where(m.domains.c.id == domain_id))).first()
    return None if row is None else _domain(row)


async def find_usable_domain(conn: AsyncConnection, account_id: str, name: str) -> str | None:
    """The id of domain ``name`` if ``account_id`` may create inboxes on it."""
    found = await conn.scalar(
        select(m.domains.c.id).where(
            m.domains.c.name == name.rstrip(".").lower(), visible_to(account_id)
        )
    )
    return None if found is None else str(found)


async def is_served(conn: AsyncConnection, name: str) -> bool:
    """Whether ``name`` is a domain of this server (any account's, or the operator's)."""
    found = await conn.scalar(
        select(m.domains.c.id).where(m.domains.c.name == name.rstrip(".").lower())
    )
    return found is not None


async def mark_verified(conn: AsyncConnection, domain_id: str, *, now: datetime) -> bool:
    """Set ``verified_at`` unless it is set already; whether this call set it."""
    result = await conn.execute(
        update(m.domains)
        .where(m.domains.c.id == domain_id, m.domains.c.verified_at.is_(None))
        .values(verified_at=now)
    )
    return bool(result.rowcount)


async def create_domain(
    conn: AsyncConnection, account_id: str, name: str, *, now: datetime
) -> Domain:
    """Add ``name`` (unverified) to the account. Raises :class:`DomainTaken`."""
    name = name.rstrip(".").lower()
    if await conn.scalar(select(m.domains.c.id).where(m.domains.c.name == name)) is not None:
        raise DomainTaken(name)
    domain_id = new_id()
    await conn.execute(
        insert(m.domains).values(id=domain_id, account_id=account_id, name=name, created_at=now)
    )
    return Domain(domain_id, name, account_id, now, None, 0)


async def delete_domain(conn: AsyncConnection, account_id: str, domain_id: str) -> bool:
    """Delete an account's own domain; False when it has none of that id.

    Raises :class:`DomainInUse` while inboxes remain on it (deleting them is explicit).
    """
    owned = await conn.scalar(
        select(m.domains.c.id).where(
            m.domains.c.id == domain_id, m.domains.c.account_id == account_id
        )
    )
    if owned is None:
        return False
    inboxes = await conn.scalar(
        select(func.count()).select_from(m.inboxes).where(m.inboxes.c.domain_id == domain_id)
    )
    if inboxes:
        raise DomainInUse(domain_id)
    await conn.execute(delete(m.domains).where(m.domains.c.id == domain_id))
    return True
