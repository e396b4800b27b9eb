"""Recipient lookup for RCPT, with a short-lived cache.

Every RCPT asks "is this domain ours, and which inbox is this address?". Under load the same few
addresses come again and again, so answers are kept for ``ttl`` seconds. A stale answer is safe:
an inbox deleted a moment ago is still accepted at RCPT and then refused with a temporary error
at delivery (its rows are gone), and a new inbox is reachable within ``ttl``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import select

from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox, split_address
from mailboxkit.store.db import Database


class Refusal(Enum):
    NOT_LOCAL = "not_local"  # the domain is not ours: relaying is refused
    UNKNOWN = "unknown"  # our domain, no such inbox


@dataclass(slots=True)
class RecipientDirectory:
    db: Database
    ttl: float = 10.0
    size: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict[str, tuple[float, Inbox | Refusal]] | None = None

    async def lookup(self, address: str) -> Inbox | Refusal:
        local, domain = split_address(address)
        key = f"{local}@{domain}"
        cache = self._cache if self._cache is not None else OrderedDict()
        self._cache = cache
        hit = cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            cache.move_to_end(key)
            return hit[1]
        answer = await self._query(local, domain)
        cache[key] = (now + self.ttl, answer)
        cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)
        return answer

    async def _query(self, local: str, domain: str) -> Inbox | Refusal:
        """One round trip: the domain, joined with the inbox when there is one."""
        query = (
            select(
                m.inboxes.c.id,
                m.inboxes.c.account_id,
                m.inboxes.c.address,
                m.inboxes.c.display_name,
            )
            .select_from(m.domains)
            .outerjoin(
                m.inboxes,
                (m.inboxes.c.domain_id == m.domains.c.id)
                & (m.inboxes.c.address == f"{local}@{domain}"),
            )
            .where(m.domains.c.name == domain)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return Refusal.NOT_LOCAL
        if row.id is None:
            return Refusal.UNKNOWN
        return Inbox(row.id, row.account_id, row.address, row.display_name)
