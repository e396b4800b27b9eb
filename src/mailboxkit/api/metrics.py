"""``GET /metrics``: the process's Prometheus metrics, for the operator's scraper.

Implementation notes:

- Off unless the operator sets a token (``MAILBOXKIT_METRICS_TOKEN``): without one the route
  answers 404 like a path that does not exist. With one, the request must carry
  ``Authorization: Bearer <token>`` (compared in constant time), else 401 in the API's error
  shape. Not an API key: a scraper needs no account, and an account's key sees no metrics.
  A wrong token counts as a failed authentication of the client's address, as a wrong API
  key does (``api.auth``): too many and the address is refused (429) for a while.
- The answer is the counters of ``mailboxkit.metrics`` (prometheus_client's text format, never
  written by hand) followed by gauges read from the database now: outbound recipients not yet
  settled (queued or being sent), webhook deliveries pending, and whether the database
  answers at all. They live in a registry made for this request, so several servers in one
  process never share them.
- The database out of reach is not an error of the scrape: ``mailboxkit_store_up`` is 0, the
  two queue gauges are left out (better absent than a false 0), and the rest is served, 200.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select

from mailboxkit.api.auth import count_failure, refuse_blocked
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import error
from mailboxkit.metrics import REGISTRY
from mailboxkit.store import models as m
from mailboxkit.store.db import Database, log_failure
from mailboxkit.store.outbox import RecipientStatus
from mailboxkit.store.webhooks import DeliveryStatus

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

UNSETTLED = (RecipientStatus.QUEUED.value, RecipientStatus.SENDING.value)

_r = m.outbound_recipients.c
_w = m.webhook_deliveries.c
_DEPTHS = select(
    select(func.count()).where(_r.status.in_(UNSETTLED)).scalar_subquery(),
    select(func.count()).where(_w.status == DeliveryStatus.PENDING.value).scalar_subquery(),
)


@router.get("/metrics")
async def scrape(request: Request, ctx: Ctx) -> Response:
    token = ctx.config.metrics_token
    if not token:
        return error(404, "not_found", "not found")
    client = await refuse_blocked(request, ctx)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("latin-1"), token.encode()
    ):
        await count_failure(ctx, client)
        return error(
            401,
            "unauthorized",
            "a valid metrics token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = generate_latest(REGISTRY) + generate_latest(await _store_gauges(ctx.db))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _store_gauges(db: Database) -> CollectorRegistry:
    """The gauges read from the database now, in a registry of their own."""
    registry = CollectorRegistry()
    up = Gauge(
        "mailboxkit_store_up",
        "1 when the database answered a query at this scrape, else 0.",
        registry=registry,
    )
    try:
        async with db.read() as conn:
            queued, pending = (await conn.execute(_DEPTHS)).one()
    except Exception as exc:
        log_failure(log, exc, "event=metrics_store_failed")
        return registry
    up.set(1)
    Gauge(
        "mailboxkit_outbound_queue_recipients",
        "Outbound recipients not yet settled: queued (new or deferred) or being sent.",
        registry=registry,
    ).set(queued)
    Gauge(
        "mailboxkit_webhook_deliveries_pending",
        "Webhook deliveries not yet settled: due now or waiting for a retry.",
        registry=registry,
    ).set(pending)
    return registry
