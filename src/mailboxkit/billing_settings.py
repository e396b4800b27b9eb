"""Billing settings: Stripe's keys and address, and the plans an account can buy.

:class:`BillingSettings` is a base of :class:`mailboxkit.config.Settings`, the one frozen settings
object: every field here is a field of ``Settings``, read from ``MAILBOXKIT_<NAME>`` and the TOML
file like the others and documented in ``docs/config.md``. Build ``Settings``, never this class.

The plans are one value: a JSON object in ``MAILBOXKIT_BILLING_PLANS``, or a table of tables in
the TOML file (``[billing_plans.pro]`` with ``price_id = "price_…"``, ``inbox_limit = 10``, …).
The free plan (``MAILBOXKIT_BILLING_FREE_PLAN`` / ``[billing_free_plan]``) is the same shape
without a price.
"""

from __future__ import annotations

import re
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STRIPE_API_BASE = "https://api.stripe.com"
FREE_PLAN = "free"  # the name of the limits of an account without a subscription in effect
_PLAN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class PlanLimits(BaseModel):
    """The limits a plan gives an account; an absent or null one is unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_quota: int | None = Field(None, ge=0, description="Bytes of stored mail.")
    inbox_limit: int | None = Field(None, ge=0, description="Inboxes.")
    daily_send_limit: int | None = Field(None, ge=0, description="Messages sent per UTC day.")


class BillingPlan(PlanLimits):
    """A plan an account can subscribe to: its Stripe price and the limits it gives."""

    price_id: str = Field(
        min_length=1,
        max_length=255,
        description="The Stripe price (price_…) of the plan: a recurring price.",
    )


class BillingSettings(BaseModel):
    """Stripe billing; part of ``Settings``. Billing is off unless the secret key is set."""

    model_config = ConfigDict(frozen=True)

    stripe_secret_key: str = Field(
        "",
        repr=False,
        description="Stripe secret key (sk_live_…, or a restricted key rk_… that may write "
        "Customers, Checkout Sessions and Customer Portal sessions). Empty: billing is off and "
        "the /api/v1/billing routes answer 404.",
    )
    stripe_webhook_secret: str = Field(
        "",
        repr=False,
        description="Signing secret (whsec_…) of the webhook endpoint registered in Stripe for "
        "POST /api/v1/billing/stripe/webhook. Required with STRIPE_SECRET_KEY.",
    )
    stripe_api_base: str = Field(
        STRIPE_API_BASE,
        description="Base URL of Stripe's API (change it only to point at a test stand-in).",
    )
    stripe_timeout: float = Field(
        20,
        gt=0,
        le=300,
        description="Seconds one request to Stripe's API may take; one out of reach is tried "
        "twice more (with Stripe's idempotency keys) before the API answers 503.",
    )
    billing_plans: dict[str, BillingPlan] = Field(
        default_factory=dict,
        description='Plans an account can buy, by name: a JSON object such as {"pro": '
        '{"price_id": "price_…", "storage_quota": 10737418240, "inbox_limit": 10, '
        '"daily_send_limit": 1000}} (in the TOML file, a [billing_plans.pro] table). A limit '
        "left out is unlimited. At least one with STRIPE_SECRET_KEY.",
    )
    billing_free_plan: PlanLimits | None = Field(
        None,
        description="Limits of an account without a subscription in effect (never subscribed, "
        'canceled, unpaid): a JSON object such as {"inbox_limit": 1, "daily_send_limit": 50} '
        "(TOML: a [billing_free_plan] table); {} is unlimited. New accounts start with these "
        "limits (billing on). Unset: the DEFAULT_* limits.",
    )

    @field_validator("stripe_secret_key", "stripe_webhook_secret")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL such as {STRIPE_API_BASE}")
        return value

    @field_validator("billing_plans")
    @classmethod
    def _plans(cls, value: dict[str, BillingPlan]) -> dict[str, BillingPlan]:
        for name in value:
            if name == FREE_PLAN or not _PLAN_NAME.fullmatch(name):
                raise ValueError(
                    f"plan name {name!r}: use 1 to 32 of a-z, 0-9, - and _ (not {FREE_PLAN!r}, "
                    "the name of BILLING_FREE_PLAN)"
                )
        prices = [plan.price_id for plan in value.values()]
        if len(set(prices)) != len(prices):
            raise ValueError("two plans have the same price_id; give each plan its own price")
        return value

    @model_validator(mode="after")
    def _check_stripe(self) -> Self:
        key = self.stripe_secret_key
        if not key:
            return self
        if not key.startswith(("sk_", "rk_")):
            raise ValueError(
                "MAILBOXKIT_STRIPE_SECRET_KEY must be a Stripe secret key (sk_…) or restricted "
                "key (rk_…), from the Stripe Dashboard's API keys page; never the publishable "
                "key (pk_…)"
            )
        if not self.stripe_webhook_secret.startswith("whsec_"):
            raise ValueError(
                "set MAILBOXKIT_STRIPE_WEBHOOK_SECRET to the signing secret (whsec_…) of the "
                "webhook endpoint for /api/v1/billing/stripe/webhook (Stripe Dashboard, "
                "Developers, Webhooks); without it subscriptions would never reach accounts"
            )
        if not self.billing_plans:
            raise ValueError(
                'set MAILBOXKIT_BILLING_PLANS, e.g. {"pro": {"price_id": "price_…", '
                '"inbox_limit": 10}}: billing with no plan has nothing to sell'
            )
        return self
