"""Allow and block lists: per-account rules on sender addresses and whole domains.

Implementation notes:

- A rule names one sender: an address (``alice@example.com``) or a domain (``example.com``,
  which also covers its subdomains, ``mail.example.com``), in lower case. It applies to every
  inbox of its account, or to one inbox (``inbox_id``).
- The most specific matching rule decides: an address over a domain, a longer domain over a
  shorter one, then an inbox's own rule over the account's. There is at most one rule per
  sender and scope (a second is :class:`RuleExists`), so two rules never tie.
- What the MX does with the decision (``mailserver/smtp.py``): a blocked envelope sender is
  refused at RCPT, a blocked From is filed in Junk, an allowed sender is never filed in Junk
  by DMARC quarantine nor labelled unauthenticated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store.ids import new_id

__all__ = [
    "RuleAction",
    "RuleExists",
    "RuleSet",
    "SenderRule",
    "account_rules",
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_rules",
    "normalize_sender",
]

MAX_SENDER_LENGTH = 320


class RuleAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class RuleExists(Exception):
    """The account already has a rule for this sender in this scope."""


@dataclass(frozen=True, slots=True)
class SenderRule:
    id: str
    account_id: str
    inbox_id: str | None  # None: every inbox of the account
    action: RuleAction
    sender: str  # an address or a domain, lower case
    created_at: datetime


def normalize_sender(text: str) -> str:
    """``Alice@Example.COM.`` -> ``alice@example.com``; ``Example.com`` -> ``example.com``.

    Raises ValueError when ``text`` is neither an address nor a domain name."""
    value = text.strip().rstrip(".").lower()
    local, at, domain = value.rpartition("@")
    if at and not local:
        raise ValueError("an address needs a local part before the @")
    labels = domain.split(".")
    if (
        not value
        or len(value) > MAX_SENDER_LENGTH
        or any(c.isspace() or c in '<>,;"' or ord(c) < 32 for c in value)
        or len(labels) < 2
        or not all(labels)
        or "@" in local.strip('"')
    ):
        raise ValueError("must be an address (alice@example.com) or a domain (example.com)")
    return value


def _rule(row: Any) -> SenderRule:
    return SenderRule(
        row.id, row.account_id, row.inbox_id, RuleAction(row.action), row.sender, row.created_at
    )


async def create_rule(
    conn: AsyncConnection,
    account_id: str,
    *,
    action: RuleAction,
    sender: str,
    inbox_id: str | None,
    now: datetime,
) -> SenderRule:
    """Add a rule (``sender`` normalized already). Raises :class:`RuleExists`; the caller
    checks that ``inbox_id`` is the account's."""
    rules = m.sender_rules.c
    scope = rules.inbox_id.is_(None) if inbox_id is None else rules.inbox_id == inbox_id
    taken = await conn.scalar(
        select(rules.id).where(rules.account_id == account_id, rules.sender == sender, scope)
    )
    if taken is not None:
        raise RuleExists(sender)
    rule = SenderRule(new_id(), account_id, inbox_id, action, sender, now)
    await conn.execute(
        insert(m.sender_rules).values(
            id=rule.id,
            account_id=account_id,
            inbox_id=inbox_id,
            action=str(action),
            sender=sender,
            created_at=now,
        )
    )
    return rule


async def list_rules(
    conn: AsyncConnection,
    account_id: str,
    *,
    inbox_id: str | None = None,
    action: RuleAction | None = None,
) -> list[SenderRule]:
    """The account's rules, oldest first; only those of one inbox, or of one action, if given."""
    rules = m.sender_rules.c
    query = select(m.sender_rules).where(rules.account_id == account_id)
    if inbox_id is not None:
        query = query.where(rules.inbox_id == inbox_id)
    if action is not None:
        query = query.where(rules.action == str(action))
    return [_rule(r) for r in await conn.execute(query.order_by(rules.id))]


async def get_rule(conn: AsyncConnection, account_id: str, rule_id: str) -> SenderRule | None:
    rules = m.sender_rules.c
    row = (
        await conn.execute(
            select(m.sender_rules).where(rules.id == rule_id, rules.account_id == account_id)
        )
    ).first()
    return None if row is None else _rule(row)


async def delete_rule(conn: AsyncConnection, account_id: str, rule_id: str) -> bool:
    rules = m.sender_rules.c
    result = await conn.execute(
        delete(m.sender_rules).where(rules.id == rule_id, rules.account_id == account_id)
    )
    return bool(result.rowcount)


async def account_rules(conn: AsyncConnection, account_id: str) -> RuleSet:
    """Every rule of the account, ready to match senders against."""
    return RuleSet(await list_rules(conn, account_id))


class RuleSet:
    """One account's rules, indexed by sender, matched in a few dictionary look-ups."""

    __slots__ = ("_by_sender",)

    def __init__(self, rules: Iterable[SenderRule]) -> None:
        self._by_sender: dict[str, list[SenderRule]] = {}
        for rule in rules:
            self._by_sender.setdefault(rule.sender, []).append(rule)

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_sender.values())

    def decide(self, inbox_id: str, sender: str) -> RuleAction | None:
        """The action of the most specific rule for ``sender`` at ``inbox_id``, or None."""
        if not self._by_sender or "@" not in sender:
            return None
        for candidate in _candidates(sender):
            found = [
                r for r in self._by_sender.get(candidate, ()) if r.inbox_id in (None, inbox_id)
            ]
            if found:  # an inbox's own rule before the account's
                return min(found, key=lambda r: r.inbox_id is None).action
        return None


def _candidates(sender: str) -> Sequence[str]:
    """The patterns that could match ``sender``, most specific first."""
    address = sender.strip().rstrip(".").lower()
    domain = address.rpartition("@")[2]
    labels = domain.split(".")
    return [address, *(".".join(labels[i:]) for i in range(len(labels) - 1))]
