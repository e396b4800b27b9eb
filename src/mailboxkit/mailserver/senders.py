"""The allow and block lists as the MX reads them: each account's rules, cached briefly.

Rules change rarely and are read at every RCPT and DATA, so an account's rule set is kept for
``ttl`` seconds. Changes made in this process (through the API) call :meth:`SenderPolicy.forget`;
other processes see them within ``ttl``. Matching is ``store.senderrules.RuleSet``'s.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mailboxkit.store.accounts import Inbox
from mailboxkit.store.db import Database
from mailboxkit.store.senderrules import RuleAction, RuleSet, account_rules


@dataclass(slots=True)
class SenderPolicy:
    db: Database
    ttl: float = 10.0
    size: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict[str, tuple[float, RuleSet]] = field(default_factory=OrderedDict)
    _generation: int = 0  # bumped by forget(), so a read that raced a change is not kept

    async def decide(self, inbox: Inbox, *senders: str) -> RuleAction | None:
        """The rule for the first of ``senders`` that one matches at ``inbox``, or None."""
        rules = await self._rules(inbox.account_id)
        for sender in senders:
            action = rules.decide(inbox.id, sender)
            if action is not None:
                return action
        return None

    def forget(self) -> None:
        """Drop every cached rule set (a rule was added or removed)."""
        self._cache.clear()
        self._generation += 1

    async def _rules(self, account_id: str) -> RuleSet:
        now = self.clock()
        hit = self._cache.get(account_id)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(account_id)
            return hit[1]
        generation = self._generation
        async with self.db.read() as conn:
            rules = await account_rules(conn, account_id)
        if generation != self._generation:
            return rules
        self._cache[account_id] = (now + self.ttl, rules)
        self._cache.move_to_end(account_id)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return rules
