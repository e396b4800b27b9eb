"""Recipient lookup for RCPT, with a short-lived cache.

Every RCPT asks "is this domain ours, and which inbox is this address?". Under load the same few
addresses come again and again, so answers are kept for ``ttl`` seconds. A stale answer is safe:
an inbox deleted a moment ago is still accepted at RCPT and then refused with a temporary error
at delivery (its rows are gone), and a new inbox is reachable within ``ttl``. Changes made in
this process (a catch-all set through the API) call :meth:`RecipientDirectory.forget`; other
processes see them within ``ttl``.

Which inbox an address reaches, in order:

1. the inbox of that address (``name+tag@`` is ``name@``);
2. for ``postmaster@`` (RFC 5321 §4.5.1: every domain must accept it; the bare ``<postmaster>``
   is the default domain's): the domain's catch-all, else the operator's inbox
   (``MAILBOXKIT_POSTMASTER``), else the oldest inbox of the domain's account (on that domain
   if it has one there);
3. the domain's catch-all inbox;
4. else no such mailbox (``550 5.1.1``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import and_, case, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, split_address
from mailboxkit.store.db import Database

log = logging.getLogger(__name__)

POSTMASTER = "postmaster"


class Refusal(Enum):
    NOT_LOCAL = "not_local"  # the domain is not ours: relaying is refused
    UNKNOWN = "unknown"  # our domain, no such inbox


@dataclass(slots=True)
class RecipientDirectory:
    db: Database
    postmaster: str = ""  # the operator's inbox for postmaster@ (MAILBOXKIT_POSTMASTER)
    default_domain: str = ""  # the domain of a bare <postmaster>
    ttl: float = 10.0
    size: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict[str, tuple[float, Inbox | Refusal]] | None = None
    _generation: int = 0  # bumped by forget(), so a lookup that raced a change is not kept

    async def lookup(self, address: str) -> Inbox | Refusal:
        if address.strip().lower() == POSTMASTER and self.default_domain:
            address = f"{POSTMASTER}@{self.default_domain}"
        local, domain = split_address(address)
        key = f"{local}@{domain}"
        cache = self._cache if self._cache is not None else OrderedDict()
        self._cache = cache
        hit = cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            cache.move_to_end(key)
            return hit[1]
        generation = self._generation
        answer = await self._query(local, domain)
        if generation != self._generation:
            return answer
        cache[key] = (now + self.ttl, answer)
        cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)
        return answer

    def forget(self) -> None:
        """Drop every cached answer (a domain's catch-all changed)."""
        if self._cache is not None:
            self._cache.clear()
        self._generation += 1

    async def _query(self, local: str, domain: str) -> Inbox | Refusal:
        """One round trip: the domain, joined with the inbox and the catch-all when there are."""
        exact, catch_all = aliased(m.inboxes), aliased(m.inboxes)
        query = (
            select(
                m.domains.c.account_id.label("domain_account"),
                *_columns(exact, "exact"),
                *_columns(catch_all, "catch_all"),
            )
            .select_from(m.domains)
            .outerjoin(
                exact,
                (exact.c.domain_id == m.domains.c.id) & (exact.c.address == f"{local}@{domain}"),
            )
            .outerjoin(
                catch_all,
                and_(
                    catch_all.c.id == m.domains.c.catch_all_inbox_id,
                    catch_all.c.account_id == m.domains.c.account_id,
                ),
            )
            .where(m.domains.c.name == domain)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return Refusal.NOT_LOCAL
            found = _inbox(row, "exact") or _inbox(row, "catch_all")
            if found is None and local == POSTMASTER:
                found = await self._postmaster(conn, domain, row.domain_account)
        return found or Refusal.UNKNOWN

    async def _postmaster(
        self, conn: AsyncConnection, domain: str, account_id: str | None
    ) -> Inbox | None:
        """Where postmaster@ a domain without that inbox and without a catch-all goes."""
        if self.postmaster:
            local, operator_domain = split_address(self.postmaster)
            row = (
                await conn.execute(
                    select(*_columns(m.inboxes, "inbox")).where(
                        m.inboxes.c.address == f"{local}@{operator_domain}"
                    )
                )
            ).first()
            if row is not None:
                return _inbox(row, "inbox")
            log.warning("event=postmaster_missing address=%s", self.postmaster)
        if account_id is not None:
            on_domain = case((m.domains.c.name == domain, 0), else_=1)
            row = (
                await conn.execute(
                    select(*_columns(m.inboxes, "inbox"))
                    .join(m.domains, m.domains.c.id == m.inboxes.c.domain_id)
                    .where(m.inboxes.c.account_id == account_id)
                    .order_by(on_domain, m.inboxes.c.created_at, m.inboxes.c.id)
                    .limit(1)
                )
            ).first()
            if row is not None:
                return _inbox(row, "inbox")
        log.warning("event=postmaster_unrouted domain=%s", domain)
        return None


def _columns(table: Any, prefix: str) -> list[Any]:
    return [
        table.c.id.label(f"{prefix}_id"),
        table.c.account_id.label(f"{prefix}_account_id"),
        table.c.address.label(f"{prefix}_address"),
        table.c.display_name.label(f"{prefix}_display_name"),
    ]


def _inbox(row: Any, prefix: str) -> Inbox | None:
    inbox_id = getattr(row, f"{prefix}_id")
    if inbox_id is None:
        return None
    return Inbox(
        inbox_id,
        getattr(row, f"{prefix}_account_id"),
        getattr(row, f"{prefix}_address"),
        getattr(row, f"{prefix}_display_name"),
    )
