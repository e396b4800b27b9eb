"""Stripe webhook events, as verified JSON, into the values the store applies.

Only the fields we use are read; any other is ignored (Stripe adds fields without a new API
version). The shapes are Stripe's ``event`` object with a ``data.object`` that is a Checkout
Session (``checkout.session.completed``) or a Subscription (``customer.subscription.*``).
A subscription's period end is on its items since API version 2025-03-31; older versions
carried it on the subscription itself, so both are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailboxkit.store.billing import Subscription, SubscriptionStatus

MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds


class EventType(StrEnum):
    CHECKOUT_COMPLETED = "checkout.session.completed"
    SUBSCRIPTION_CREATED = "customer.subscription.created"
    SUBSCRIPTION_UPDATED = "customer.subscription.updated"
    SUBSCRIPTION_DELETED = "customer.subscription.deleted"


SUBSCRIPTION_EVENTS = frozenset(
    {
        EventType.SUBSCRIPTION_CREATED,
        EventType.SUBSCRIPTION_UPDATED,
        EventType.SUBSCRIPTION_DELETED,
    }
)


class StripeEventInvalid(Exception):
    """A signed body that is not an event of the shape its type promises (400)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Data(_Model):
    object: dict[str, object]


class _Event(_Model):
    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=100)
    created: int = Field(ge=0, le=MAX_TIME)
    data: _Data


class _Price(_Model):
    id: str = Field(max_length=255)


class _Item(_Model):
    price: _Price | None = None
    current_period_end: int | None = Field(None, ge=0, le=MAX_TIME)


class _Items(_Model):
    data: list[_Item] = Field(default_factory=list, max_length=100)


class _Subscription(_Model):
    id: str = Field(min_length=1, max_length=255)
    customer: str = Field(min_length=1, max_length=255)
    status: str = Field(min_length=1, max_length=32)  # a status new to us is not live
    items: _Items = Field(default_factory=_Items)
    current_period_end: int | None = Field(None, ge=0, le=MAX_TIME)
    cancel_at_period_end: bool = False


class _CheckoutSession(_Model):
    mode: str
    client_reference_id: str | None = Field(None, max_length=255)
    customer: str | None = Field(None, max_length=255)
    subscription: str | None = Field(None, max_length=255)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    created: datetime
    object: dict[str, object]


@dataclass(frozen=True, slots=True)
class CheckoutCompleted:
    """A paid Checkout Session in subscription mode: who bought (our account id) what."""

    account_id: str
    customer_id: str
    subscription_id: str


def parse_event(body: bytes) -> Event:
    try:
        event = _Event.model_validate_json(body)
    except ValidationError as error:
        raise StripeEventInvalid(f"not a Stripe event ({error.error_count()} errors)") from None
    return Event(event.id, event.type, _time(event.created), event.data.object)


def subscription(event: Event) -> Subscription:
    """The subscription a ``customer.subscription.*`` event carries; deleted is canceled."""
    try:
        sub = _Subscription.model_validate(event.object)
    except ValidationError as error:
        raise StripeEventInvalid(f"not a subscription ({error.error_count()} errors)") from None
    item = sub.items.data[0] if sub.items.data else None
    period_end = item.current_period_end if item and item.current_period_end else None
    period_end = period_end or sub.current_period_end
    deleted = event.type == EventType.SUBSCRIPTION_DELETED
    return Subscription(
        subscription_id=sub.id,
        customer_id=sub.customer,
        status=SubscriptionStatus.CANCELED if deleted else sub.status,
        price_id=item.price.id if item and item.price else None,
        current_period_end=_time(period_end) if period_end else None,
        cancel_at_period_end=sub.cancel_at_period_end,
        at=event.created,
    )


def checkout_completed(event: Event) -> CheckoutCompleted | None:
    """What a ``checkout.session.completed`` event links; None when it is not a subscription
    Checkout of ours (no client reference, no customer or subscription)."""
    try:
        session = _CheckoutSession.model_validate(event.object)
    except ValidationError as error:
        raise StripeEventInvalid(f"not a Checkout Session ({error.error_count()} errors)") from None
    if (
        session.mode != "subscription"
        or not session.client_reference_id
        or not session.customer
        or not session.subscription
    ):
        return None
    return CheckoutCompleted(session.client_reference_id, session.customer, session.subscription)


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
