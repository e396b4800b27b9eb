"""Stripe billing in the store: an account's Stripe customer, its subscriptions, and the limits
its plan gives it.

Implementation notes (invariants the webhook route relies on):

- An account has at most one Stripe customer (``billing_customers``, the customer id unique),
  created before its first Checkout Session; a subscription event finds its account by its
  customer only, so an event about one account's customer never touches another account.
- Each subscription keeps the state of the newest event about it (``state_at``, the event's
  ``created``). Stripe does not deliver events in order: an older event than the one applied is
  ignored. Events of the same second are ordered by the subscription's lifecycle (incomplete,
  then live, then ended: a ``created`` and an ``updated`` of one Checkout often share a
  second); an ended subscription (``canceled``, ``incomplete_expired``) stays ended, as Stripe
  never revives one.
- The account's limits are recomputed from all its subscriptions after each change: the plan of
  the newest live one (``active``, ``trialing``, ``past_due``: a late payment keeps the plan
  until Stripe gives up and cancels) whose price is a plan's, else the free plan's. So the
  order in which several subscriptions' events come does not matter.
- Each Stripe event is applied once: its id is inserted in ``billing_events`` in the
  transaction that applies it (:func:`claim_event`); a redelivery finds it and changes nothing.
  On PostgreSQL a concurrent redelivery waits on that row until the first commits.
- Lock order: the account row (``quota.lock_accounts``), then its subscriptions, as every
  other writer of ``accounts`` locks it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.store import models as m
from mailboxkit.store import quota
from mailboxkit.store.db import upsert
from mailboxkit.store.quota import Limits

FREE_PLAN = "free"
EVENT_RETENTION = timedelta(days=30)  # Stripe retries an event for up to 3 days


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


LIVE = frozenset(
    {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE}
)
ENDED = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED})


def _stage(status: str | None) -> int:
    """Where a status is in a subscription's life: for events of the same second."""
    if status is None or status == SubscriptionStatus.INCOMPLETE:
        return 0
    return 2 if status in ENDED else 1


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    price_id: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Catalog:
    """The plans on sale and the limits of an account without one."""

    plans: tuple[Plan, ...]
    free: Limits

    def by_name(self, name: str) -> Plan | None:
        return next((p for p in self.plans if p.name == name), None)

    def by_price(self, price_id: str | None) -> Plan | None:
        return next((p for p in self.plans if p.price_id == price_id), None)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription's state, as a Stripe event (``at``: its ``created``) tells it."""

    subscription_id: str
    customer_id: str
    status: str
    price_id: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class Billing:
    """An account's billing as the API shows it."""

    customer_id: str | None
    plan: str  # FREE_PLAN when no live subscription to a plan
    subscription: Subscription | None  # the one in effect, else the newest


class Applied(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older than the state already applied
    UNKNOWN_CUSTOMER = "unknown_customer"
    IGNORED = "ignored"


async def customer_of(conn: AsyncConnection, account_id: str) -> str | None:
    c = m.billing_customers.c
    found = await conn.scalar(select(c.customer_id).where(c.account_id == account_id))
    return None if found is None else str(found)


async def account_of(conn: AsyncConnection, customer_id: str) -> str | None:
    c = m.billing_customers.c
    found = await conn.scalar(select(c.account_id).where(c.customer_id == customer_id))
    return None if found is None else str(found)


async def link_customer(
    conn: AsyncConnection, account_id: str, customer_id: str, *, now: datetime
) -> str:
    """Make ``customer_id`` the account's customer unless it has one; the one it has after."""
    await conn.execute(
        upsert(conn, m.billing_customers)
        .values(account_id=account_id, customer_id=customer_id, created_at=now)
        .on_conflict_do_nothing()
    )
    found = await customer_of(conn, account_id)
    assert found is not None
    return found


async def claim_event(
    conn: AsyncConnection, event_id: str, kind: str, account_id: str | None, *, now: datetime
) -> bool:
    """Record the event as applied in this transaction; False when it already was. Forgets
    events older than :data:`EVENT_RETENTION`."""
    e = m.billing_events.c
    await conn.execute(delete(m.billing_events).where(e.received_at < now - EVENT_RETENTION))
    claimed = await conn.scalar(
        upsert(conn, m.billing_events)
        .values(event_id=event_id, type=kind, account_id=account_id, received_at=now)
        .on_conflict_do_nothing()
        .returning(e.event_id)
    )
    return claimed is not None


async def link_checkout(
    conn: AsyncConnection,
    account_id: str,
    customer_id: str,
    subscription_id: str,
    *,
    now: datetime,
) -> bool:
    """A completed Checkout Session: the account's customer and new subscription. False (and
    nothing changed) when the customer is another account's, or the account has another."""
    owner = await account_of(conn, customer_id)
    if owner is not None and owner != account_id:
        return False
    if await link_customer(conn, account_id, customer_id, now=now) != customer_id:
        return False
    s = m.billing_subscriptions.c
    await conn.execute(
        upsert(conn, m.billing_subscriptions)
        .values(subscription_id=subscription_id, account_id=account_id, updated_at=now)
        .on_conflict_do_nothing()
    )
    linked = await conn.scalar(select(s.account_id).where(s.subscription_id == subscription_id))
    return linked == account_id


async def apply_subscription(
    conn: AsyncConnection, sub: Subscription, catalog: Catalog, *, now: datetime
) -> Applied:
    """Record what a subscription event says unless a newer state is recorded, then set the
    account's limits from its subscriptions (see the notes)."""
    account_id = await account_of(conn, sub.customer_id)
    if account_id is None:
        return Applied.UNKNOWN_CUSTOMER
    await quota.lock_accounts(conn, [account_id])
    s = m.billing_subscriptions.c
    query = select(m.billing_subscriptions).where(s.subscription_id == sub.subscription_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is not None and row.account_id != account_id:
        return Applied.IGNORED
    if row is not None and not _newer(sub, row.status, row.state_at):
        return Applied.STALE
    values = {
        "account_id": account_id,
        "status": sub.status,
        "price_id": sub.price_id,
        "current_period_end": sub.current_period_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "state_at": sub.at,
        "updated_at": now,
    }
    if row is None:
        await conn.execute(
            m.billing_subscriptions.insert().values(subscription_id=sub.subscription_id, **values)
        )
    else:
        await conn.execute(
            update(m.billing_subscriptions)
            .where(s.subscription_id == sub.subscription_id)
            .values(**values)
        )
    plan, _ = _in_effect(await _subscriptions(conn, account_id), catalog)
    await quota.set_limits(
        conn, account_id, quota.limit_columns(plan.limits if plan else catalog.free)
    )
    return Applied.APPLIED


def _newer(sub: Subscription, status: str | None, state_at: datetime | None) -> bool:
    """Whether the event's state replaces the recorded one (see the notes)."""
    if state_at is None:
        return True
    if status in ENDED and sub.status not in ENDED:
        return False
    if sub.at != state_at:
        return sub.at > state_at
    return _stage(sub.status) >= _stage(status)


async def _subscriptions(conn: AsyncConnection, account_id: str) -> list[Subscription]:
    s = m.billing_subscriptions.c
    rows = await conn.execute(
        select(m.billing_subscriptions).where(s.account_id == account_id, s.status.is_not(None))
    )
    customer = await customer_of(conn, account_id) or ""
    return [
        Subscription(
            r.subscription_id,
            customer,
            r.status,
            r.price_id,
            r.current_period_end,
            bool(r.cancel_at_period_end),
            r.state_at,
        )
        for r in rows
    ]


def _in_effect(
    subs: Sequence[Subscription], catalog: Catalog
) -> tuple[Plan | None, Subscription | None]:
    """The plan in effect and its subscription: the newest live one to a plan's price."""
    live = [
        (plan, sub)
        for sub in subs
        if sub.status in LIVE and (plan := catalog.by_price(sub.price_id)) is not None
    ]
    if not live:
        return None, None
    return max(live, key=lambda found: (found[1].at, found[1].subscription_id))


async def get_billing(conn: AsyncConnection, account_id: str, catalog: Catalog) -> Billing:
    """The account's customer, plan in effect and the subscription shown with it."""
    subs = await _subscriptions(conn, account_id)
    plan, sub = _in_effect(subs, catalog)
    if sub is None and subs:
        sub = max(subs, key=lambda found: (found.at, found.subscription_id))
    return Billing(await customer_of(conn, account_id), plan.name if plan else FREE_PLAN, sub)


async def has_live_subscription(conn: AsyncConnection, account_id: str) -> bool:
    """Whether the account has a live subscription (a second Checkout would bill it twice)."""
    return any(sub.status in LIVE for sub in await _subscriptions(conn, account_id))


async def live_subscriptions(conn: AsyncConnection, account_id: str) -> list[str]:
    """The ids of the account's live subscriptions (Stripe still bills them)."""
    return [
        sub.subscription_id for sub in await _subscriptions(conn, account_id) if sub.status in LIVE
    ]
