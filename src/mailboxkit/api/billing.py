"""``/billing``: an account's Stripe subscription (account keys only).

``GET /billing`` (the plan in effect, the subscription, the plans on sale), ``POST
/billing/checkout`` (a Stripe Checkout Session for a plan: the client sends its user to the
answered ``url``), ``POST /billing/portal`` (a Customer Portal session, where the user changes
plan, card, or cancels). Stripe's webhook, which sets the account's limits from its plan, is
``billing_webhook.py``.

Implementation notes:

- Billing is on when the composition root puts a :class:`BillingContext` in
  ``app.state.billing`` (``MAILBOXKIT_STRIPE_SECRET_KEY`` set); otherwise every route is 404.
- An account's Stripe customer is created (and stored) before its first Checkout Session, and
  every session names it, so subscription events always find their account by customer, and
  a completed Checkout can only link the customer the account already has.
- Nothing is awaited from Stripe inside a database transaction. Stripe out of reach: 503
  ``billing_unavailable``; Stripe refusing a request: 502 ``billing_error`` (details logged).
- The stripe library is imported where it is first used, with billing on: most servers never
  bill, and importing it is a tenth of a second of every server start and CLI command.
- Deleting an account (the API's ``DELETE /account`` and the CLI's ``account delete``) is
  :func:`close_account`: the shared-domain refusal, Stripe's cancellations, then the erasure.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.store import accounts, erasure
from mailboxkit.store import billing as store
from mailboxkit.store.billing import Catalog
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database
from mailboxkit.store.quota import Limits

if TYPE_CHECKING:
    import stripe
    from stripe.params import CustomerCreateParams
    from stripe.params.checkout import SessionCreateParams

log = logging.getLogger(__name__)

CUSTOMER_METADATA = "mailboxkit_account_id"


@dataclass(frozen=True, slots=True)
class BillingContext:
    """Put in ``app.state.billing`` by the composition root when billing is on."""

    client: stripe.StripeClient
    http: stripe.HTTPXClient  # the client's connections
    catalog: Catalog
    webhook_secret: str = field(repr=False)

    async def close(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]


async def billing_context(request: Request) -> BillingContext:
    found = billing_of(request.app)
    if found is None:
        raise ApiError(404, "not_found", "billing is not enabled on this server")
    return found


Billing = Annotated[BillingContext, Depends(billing_context)]


# Bodies.


class PlanOffer(BaseModel):
    name: str
    limits: s.QuotaLimits


class BillingState(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "plan": "pro",
                    "status": "active",
                    "current_period_end": s.EXAMPLE_TIME,
                    "cancel_at_period_end": False,
                    "has_customer": True,
                    "plans": [
                        {
                            "name": "pro",
                            "limits": {
                                "storage_bytes": 10737418240,
                                "inboxes": 10,
                                "sends_per_day": 1000,
                            },
                        }
                    ],
                    "free_limits": {"storage_bytes": 104857600, "inboxes": 1, "sends_per_day": 50},
                }
            ]
        }
    )
    plan: str = Field(
        description="The plan whose limits the account has: `free` without a live "
        "subscription (active, trialing or past due) to one of the plans."
    )
    status: str | None = Field(
        description="Stripe's status of the subscription in effect, else of the latest one "
        "(e.g. `canceled`); null: never subscribed."
    )
    current_period_end: datetime | None = Field(
        description="When the subscription's current period ends (it renews, or ends if "
        "`cancel_at_period_end`)."
    )
    cancel_at_period_end: bool
    has_customer: bool = Field(description="Whether POST /billing/portal is available.")
    plans: list[PlanOffer] = Field(description="The plans on sale, for POST /billing/checkout.")
    free_limits: s.QuotaLimits = Field(description="The limits without a subscription.")


class CheckoutRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "plan": "pro",
                    "success_url": "https://app.example.com/billing/done",
                    "cancel_url": "https://app.example.com/billing",
                }
            ]
        },
    )
    plan: str = Field(min_length=1, max_length=32, description="One of GET /billing's plans.")
    success_url: HttpUrl = Field(description="Where Stripe sends the user after paying.")
    cancel_url: HttpUrl = Field(description="Where Stripe sends the user who goes back.")


class PortalRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"return_url": "https://app.example.com/billing"}]},
    )
    return_url: HttpUrl = Field(description="Where the portal's back link leads.")


class SessionUrl(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": "https://checkout.stripe.com/c/pay/cs_…"}]}
    )
    url: str = Field(description="Stripe's page to send the user to; it expires.")


def error_doc(description: str) -> dict[str, Any]:
    return {"model": s.Error, "description": description}


Responses = dict[int | str, dict[str, Any]]
OFF: Responses = {404: error_doc("Billing is not enabled on this server (`not_found`).")}
STRIPE_ERRORS: Responses = {
    502: error_doc("Stripe refused the request (`billing_error`); the details are logged."),
    503: error_doc(
        "Stripe or the mail store is out of reach (`billing_unavailable`, `unavailable`); "
        "see the Retry-After header."
    ),
}

router = APIRouter(tags=["billing"])


def _limits(limits: Limits) -> s.QuotaLimits:
    return s.QuotaLimits(
        storage_bytes=limits.storage, inboxes=limits.inboxes, sends_per_day=limits.sends_per_day
    )


@router.get(
    "/billing",
    response_model=BillingState,
    summary="Get the account's plan and subscription",
    description="The plan whose limits the account has, its Stripe subscription's status and "
    "period, and the plans on sale with their limits (null: unlimited). Needs an account key.",
    responses={**s.AUTHENTICATED, **s.error_responses(403), **OFF},
)
async def get_billing(owner: AccountPrincipal, ctx: Ctx, billing: Billing) -> BillingState:
    catalog = billing.catalog
    async with ctx.db.read() as conn:
        found = await store.get_billing(conn, owner.account_id, catalog)
    sub = found.subscription
    return BillingState(
        plan=found.plan,
        status=sub.status if sub else None,
        current_period_end=sub.current_period_end if sub else None,
        cancel_at_period_end=sub.cancel_at_period_end if sub else False,
        has_customer=found.customer_id is not None,
        plans=[PlanOffer(name=p.name, limits=_limits(p.limits)) for p in catalog.plans],
        free_limits=_limits(catalog.free),
    )


@router.post(
    "/billing/checkout",
    response_model=SessionUrl,
    summary="Start buying a plan (Stripe Checkout)",
    description="Creates a Stripe Checkout Session for a subscription to the plan and answers "
    "its `url`: send the user there. Once paid, Stripe tells this server (webhook) and the "
    "account gets the plan's limits. 409 when the account already has a live subscription: "
    "change plans in the billing portal (POST /billing/portal). Needs an account key.",
    responses={**s.AUTHENTICATED, **s.error_responses(403, 409), **OFF, **STRIPE_ERRORS},
)
async def checkout(
    body: CheckoutRequest, owner: AccountPrincipal, ctx: Ctx, billing: Billing
) -> SessionUrl:
    plan = billing.catalog.by_name(body.plan)
    if plan is None:
        raise ApiError(
            422,
            "validation_error",
            f"no plan named {body.plan!r}; GET /billing lists them",
            fields=[{"field": "body.plan", "message": "not one of the plans"}],
        )
    async with ctx.db.read() as conn:
        if await store.has_live_subscription(conn, owner.account_id):
            raise ApiError(
                409,
                "conflict",
                "this account already has a subscription; change plans in the billing portal",
            )
        customer = await store.customer_of(conn, owner.account_id)
    if customer is None:
        customer = await _create_customer(ctx, billing, owner.account_id)
    params: SessionCreateParams = {
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": owner.account_id,
        "line_items": [{"price": plan.price_id, "quantity": 1}],
        "success_url": str(body.success_url),
        "cancel_url": str(body.cancel_url),
        "subscription_data": {"metadata": {CUSTOMER_METADATA: owner.account_id}},
    }
    async with stripe_errors("checkout", owner.account_id):
        session = await billing.client.v1.checkout.sessions.create_async(params)
    log.info(
        "event=billing_checkout account_id=%s plan=%s session=%s",
        owner.account_id,
        plan.name,
        session.id,
    )
    return SessionUrl(url=_url(session.url))


async def _create_customer(ctx: Ctx, billing: BillingContext, account_id: str) -> str:
    """The account's Stripe customer, created now (a concurrent request's if it won)."""
    async with ctx.db.read() as conn:
        account = await accounts.get_account(conn, account_id)
    if account is None:
        raise ApiError(404, "not_found", "account not found")
    params: CustomerCreateParams = {
        "name": account.name,
        "metadata": {CUSTOMER_METADATA: account_id},
    }
    if account.owner_email:
        params["email"] = account.owner_email
    async with stripe_errors("create_customer", account_id):
        created = await billing.client.v1.customers.create_async(params)
    async with ctx.db.write() as conn:
        customer = await store.link_customer(conn, account_id, created.id, now=ctx.clock.now())
    log.info("event=billing_customer account_id=%s customer=%s", account_id, customer)
    return customer


@router.post(
    "/billing/portal",
    response_model=SessionUrl,
    summary="Open the billing portal (Stripe Customer Portal)",
    description="Creates a Stripe Customer Portal session for the account's customer and "
    "answers its `url`, where the user changes plan or card, sees invoices, or cancels. 409 "
    "when the account has never started a Checkout (it has no Stripe customer). Needs an "
    "account key.",
    responses={**s.AUTHENTICATED, **s.error_responses(403, 409), **OFF, **STRIPE_ERRORS},
)
async def portal(
    body: PortalRequest, owner: AccountPrincipal, ctx: Ctx, billing: Billing
) -> SessionUrl:
    async with ctx.db.read() as conn:
        customer = await store.customer_of(conn, owner.account_id)
    if customer is None:
        raise ApiError(
            409, "conflict", "this account has no billing yet; start with POST /billing/checkout"
        )
    async with stripe_errors("portal", owner.account_id):
        session = await billing.client.v1.billing_portal.sessions.create_async(
            {"customer": customer, "return_url": str(body.return_url)}
        )
    return SessionUrl(url=_url(session.url))


def billing_of(app: Any) -> BillingContext | None:
    """The application's billing, None when it is off."""
    found = getattr(app.state, "billing", None)
    return found if isinstance(found, BillingContext) else None


async def cancel_subscriptions(billing: BillingContext, db: Database, account_id: str) -> int:
    """Cancel the account's live subscriptions at once, before the account is deleted: a
    deleted account is never charged again. How many. A subscription Stripe no longer has
    counts as canceled; Stripe out of reach or refusing raises ``stripe.StripeError`` (the
    caller deletes nothing then)."""
    import stripe

    async with db.read() as conn:
        live = await store.live_subscriptions(conn, account_id)
    for subscription_id in live:
        try:
            await billing.client.v1.subscriptions.cancel_async(subscription_id)
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:  # 404: no such subscription, nothing to bill
                raise
        log.info(
            "event=billing_canceled account_id=%s subscription=%s", account_id, subscription_id
        )
    return len(live)


async def close_account(
    billing: BillingContext | None,
    db: Database,
    blobs: BlobStore,
    account_id: str,
    *,
    now: datetime,
) -> tuple[erasure.Erased | None, int]:
    """Delete an account for good: refused (``erasure.DomainShared``) while another account
    has inboxes on one of its domains, then its Stripe subscriptions canceled (billing on;
    ``stripe.StripeError`` deletes nothing), then its data erased. What was erased (None: no
    such account) and how many subscriptions were canceled."""
    async with db.read() as conn:
        if await erasure.domain_shared(conn, account_id):
            raise erasure.DomainShared(account_id)
    canceled = 0 if billing is None else await cancel_subscriptions(billing, db, account_id)
    return await erasure.erase_account(db, blobs, account_id, now=now), canceled


def _url(url: str | None) -> str:
    if not url:
        log.warning("event=billing_stripe_failed reason=no_url")
        raise ApiError(502, "billing_error", "the payment provider answered without a URL")
    return url


@asynccontextmanager
async def stripe_errors(action: str, account_id: str) -> AsyncIterator[None]:
    """Turns the stripe library's errors into the API's 503 and 502, logged once."""
    import stripe

    try:
        yield
    except stripe.APIConnectionError:
        log.warning("event=billing_stripe_unreachable action=%s account_id=%s", action, account_id)
        raise ApiError(
            503,
            "billing_unavailable",
            "the payment provider is out of reach; try again shortly",
            headers={"Retry-After": "30"},
        ) from None
    except stripe.StripeError as error:
        log.warning(
            "event=billing_stripe_failed action=%s account_id=%s status=%s code=%s "
            "request_id=%s error=%s",
            action,
            account_id,
            error.http_status,
            error.code,
            error.request_id,
            type(error).__name__,
        )
        raise ApiError(502, "billing_error", "the payment provider refused the request") from None
