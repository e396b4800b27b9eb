"""``POST /billing/stripe/webhook``: Stripe's events, which link an account to its customer
and subscription and set its limits from its plan.

Not bearer-authenticated: the ``Stripe-Signature`` header is checked by the stripe library
(HMAC-SHA256 of ``t.body`` with the endpoint's secret, the timestamp within Stripe's
recommended 5 minutes of this machine's clock) before anything in the body is read.
``checkout.session.completed`` links the account named by ``client_reference_id`` to its
customer and subscription; ``customer.subscription.*`` record the subscription's state and set
the account's limits from its plan (``store/billing.py``). The event id is claimed in the same
transaction, and 2xx is answered only after the commit, so a failure is retried by Stripe and a
redelivery changes nothing. Other event types: 200, ignored.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict

from mailboxkit.api.billing import OFF, Billing, error_doc
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.api.stripe_events import (
    SUBSCRIPTION_EVENTS,
    Event,
    EventType,
    StripeEventInvalid,
    checkout_completed,
    parse_event,
    subscription,
)
from mailboxkit.store import accounts
from mailboxkit.store import billing as store
from mailboxkit.store.billing import Catalog

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300  # seconds: Stripe's recommended 5 min (its library's default)

router = APIRouter(tags=["billing"])


class WebhookAnswer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "applied"}]})
    status: Literal["applied", "duplicate", "stale", "ignored"]


WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "description": "A Stripe event, exactly as Stripe posts it (the signature covers the "
        "bytes).",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "id": "evt_1QxYz…",
                    "object": "event",
                    "type": "customer.subscription.updated",
                    "created": 1795858200,
                    "data": {"object": {"id": "sub_…", "object": "subscription"}},
                },
            }
        },
    }
}


@router.post(
    "/billing/stripe/webhook",
    response_model=WebhookAnswer,
    summary="Receive Stripe events (webhook endpoint)",
    description="The endpoint to register in Stripe for the events "
    "`checkout.session.completed`, `customer.subscription.created`, "
    "`customer.subscription.updated` and `customer.subscription.deleted`. Not "
    "bearer-authenticated: the `Stripe-Signature` header must be valid for "
    "`MAILBOXKIT_STRIPE_WEBHOOK_SECRET` and at most 5 minutes old, else 400 and nothing is "
    "done. Each event is applied once (a redelivery answers `duplicate`), an event older "
    "than what is recorded of its subscription answers `stale`, other types `ignored`.",
    responses={
        400: error_doc(
            "Bad or stale signature (`invalid_signature`), or not an event (`bad_request`)."
        ),
        **OFF,
        503: error_doc("The mail store is out of reach (`unavailable`); Stripe retries."),
    },
    openapi_extra=WEBHOOK_BODY,
)
async def stripe_webhook(
    request: Request,
    ctx: Ctx,
    billing: Billing,
    stripe_signature: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> WebhookAnswer:
    import stripe

    body = await request.body()
    try:
        stripe.WebhookSignature.verify_header(
            body, stripe_signature, billing.webhook_secret, SIGNATURE_TOLERANCE
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
        log.warning("event=billing_webhook_refused reason=%s", str(error)[:100])
        raise ApiError(
            400, "invalid_signature", "the Stripe signature is missing, bad or stale"
        ) from None
    try:
        event = parse_event(body)
        status = await _apply(ctx, billing.catalog, event)
    except StripeEventInvalid as error:
        log.warning("event=billing_webhook_invalid reason=%s", error)
        raise ApiError(400, "bad_request", str(error)) from None
    log.info(
        "event=billing_webhook stripe_event=%s type=%s outcome=%s", event.id, event.type, status
    )
    return WebhookAnswer(status=status)


Outcome = Literal["applied", "duplicate", "stale", "ignored"]


async def _apply(ctx: Ctx, catalog: Catalog, event: Event) -> Outcome:
    """Apply the event in one transaction that also claims its id (see the module notes)."""
    now = ctx.clock.now()
    if event.type == EventType.CHECKOUT_COMPLETED:
        completed = checkout_completed(event)
        if completed is None:
            return "ignored"
        async with ctx.db.write() as conn:
            known = await accounts.get_account(conn, completed.account_id) is not None
            account_id = completed.account_id if known else None
            if not await store.claim_event(conn, event.id, event.type, account_id, now=now):
                return "duplicate"
            linked = known and await store.link_checkout(
                conn,
                completed.account_id,
                completed.customer_id,
                completed.subscription_id,
                now=now,
            )
        if not linked:
            log.warning(
                "event=billing_checkout_ignored account_id=%s customer=%s known_account=%s",
                completed.account_id,
                completed.customer_id,
                known,
            )
        return "applied" if linked else "ignored"
    if event.type not in SUBSCRIPTION_EVENTS:
        return "ignored"
    sub = subscription(event)
    async with ctx.db.write() as conn:
        account_id = await store.account_of(conn, sub.customer_id)
        if not await store.claim_event(conn, event.id, event.type, account_id, now=now):
            return "duplicate"
        applied = await store.apply_subscription(conn, sub, catalog, now=now)
    if applied is store.Applied.UNKNOWN_CUSTOMER:
        log.info("event=billing_unknown_customer customer=%s", sub.customer_id)
    if sub.status in store.LIVE and catalog.by_price(sub.price_id) is None:
        log.warning("event=billing_unknown_price account_id=%s price=%s", account_id, sub.price_id)
    if applied is store.Applied.APPLIED:
        return "applied"
    return "stale" if applied is store.Applied.STALE else "ignored"
