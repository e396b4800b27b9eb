"""Domains as the HTTP API sees them: an account's own, plus the operator's shared ones.

A domain row with ``account_id`` NULL belongs to the operator (the default domain): every
account may create inboxes on it, none may change or delete it. An account's own domain is
invisible to every other account. Domain names are unique across the server, because the MX
must know which inboxes a domain's mail goes to.

Implementation notes:

- DNS state: *unverified* until every required record is right once (``verified_at``); then
  *verified*, or *failing* while a later check finds a required record missing or wrong
  (``dns_failing_since``), until a check finds them right again. Each change is one
  conditional UPDATE, so of several processes checking at once exactly one sees it happen
  (and tells the account).
- The catch-all inbox is shown only when it still exists and belongs to the account asking.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id


class DomainTaken(Exception):
    """A domain of that name exists already (this account's, another's or the operator's)."""


class DomainInUse(Exception):
    """The domain still has inboxes; they must be deleted first."""


class DnsStatus(StrEnum):
    UNVERIFIED = "unverified"  # its required records have never all been right
    VERIFIED = "verified"
    FAILING = "failing"  # verified once, but a required record is now missing or wrong


class Transition(StrEnum):
    """What a DNS check changed."""

    NONE = "none"
    VERIFIED = "verified"  # the first time every required record is right
    FAILED = "failed"  # a verified domain's required records broke
    RECOVERED = "recovered"  # a failing domain's records are right again


@dataclass(frozen=True, slots=True)
class Domain:
    id: str
    name: str
    account_id: str | None  # None: the operator's, shared by every account
    created_at: datetime
    verified_at: datetime | None
    inbox_count: int
    catch_all_inbox_id: str | None = None
    dns_checked_at: datetime | None = None
    dns_failing_since: datetime | None = None

    @property
    def dns_status(self) -> DnsStatus:
        if self.verified_at is None:
            return DnsStatus.UNVERIFIED
        return DnsStatus.VERIFIED if self.dns_failing_since is None else DnsStatus.FAILING


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
    catch_all = aliased(m.inboxes)
    return (
        select(m.domains, count.label("inbox_count"), catch_all.c.id.label("catch_all"))
        .outerjoin(
            catch_all,
            and_(
                catch_all.c.id == m.domains.c.catch_all_inbox_id,
                catch_all.c.account_id == account_id,
            ),
        )
        .where(visible_to(account_id))
    )


def _domain(row: Any) -> Domain:
    return Domain(
        row.id,
        row.name,
        row.account_id,
        row.created_at,
        row.verified_at,
        int(row.inbox_count),
        row.catch_all,
        row.dns_checked_at,
        row.dns_failing_since,
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


async def set_catch_all(
    conn: AsyncConnection, account_id: str, domain_id: str, inbox_id: str | None
) -> bool:
    """Make ``inbox_id`` (None: nobody) the catch-all of an account's own domain; False when
    the account has no such domain. The caller checks that the inbox is the account's."""
    result = await conn.execute(
        update(m.domains)
        .where(m.domains.c.id == domain_id, m.domains.c.account_id == account_id)
        .values(catch_all_inbox_id=inbox_id)
    )
    return bool(result.rowcount)


def _plain(row: Any) -> Domain:
    """A domain row as such (no inbox count, the catch-all id as stored)."""
    return Domain(
        row.id,
        row.name,
        row.account_id,
        row.created_at,
        row.verified_at,
        0,
        row.catch_all_inbox_id,
        row.dns_checked_at,
        row.dns_failing_since,
    )


async def verified_domains(conn: AsyncConnection) -> list[Domain]:
    """Every verified domain (failing ones too), for the periodic re-check."""
    rows = await conn.execute(
        select(m.domains).where(m.domains.c.verified_at.is_not(None)).order_by(m.domains.c.name)
    )
    return [_plain(r) for r in rows]


async def domain_state(conn: AsyncConnection, domain_id: str) -> Domain | None:
    """Any domain by id, whoever owns it (the DNS checks: not for what an account sees)."""
    row = (await conn.execute(select(m.domains).where(m.domains.c.id == domain_id))).first()
    return None if row is None else _plain(row)


async def record_check(
    conn: AsyncConnection, domain_id: str, *, ok: bool, broken: bool, now: datetime
) -> Transition:
    """Record a DNS check of the domain: ``ok`` when every required record is right,
    ``broken`` when one is missing or wrong (neither: the check could not decide)."""
    domain = m.domains.c
    changes: tuple[tuple[Transition, Any, dict[str, Any]], ...] = ()
    if ok:
        changes = (
            (Transition.VERIFIED, domain.verified_at.is_(None), {"verified_at": now}),
            (Transition.RECOVERED, domain.dns_failing_since.is_not(None), {}),
        )
    elif broken:
        failing = and_(domain.verified_at.is_not(None), domain.dns_failing_since.is_(None))
        changes = ((Transition.FAILED, failing, {"dns_failing_since": now}),)
    for transition, condition, values in changes:
        if transition is not Transition.FAILED:
            values = {**values, "dns_failing_since": None}
        result = await conn.execute(
            update(m.domains)
            .where(domain.id == domain_id, condition)
            .values(dns_checked_at=now, **values)
        )
        if result.rowcount:
            return transition
    await conn.execute(update(m.domains).where(domain.id == domain_id).values(dns_checked_at=now))
    return Transition.NONE


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
