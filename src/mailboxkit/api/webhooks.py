"""``/webhooks``: endpoints that receive signed events, their secrets, delivery log and replays.

Managing webhooks needs an account key. An endpoint's ``events`` are names or prefixes matched
on dot boundaries (``message.received`` also gets ``message.received.spam`` and
``message.received.unauthenticated``; ``*`` gets everything); ``inbox_ids`` limits it to some
inboxes. Its ``whsec_`` secret is shown when it is made and when it is rotated, never again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.dispatcher import TargetRefused, check_target
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import ID_PATTERN, Limit, PageToken
from mailboxkit.api.signing import new_secret
from mailboxkit.store import models as m
from mailboxkit.store import webhook_dispatch as dispatch
from mailboxkit.store import webhooks as store
from mailboxkit.store.ids import new_id

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"], responses=s.AUTHENTICATED | s.error_responses(403, 404))

ROTATION_GRACE = timedelta(hours=24)  # the old secret keeps signing this long after a rotation
WEBHOOK_ID = "0193a3c2-7d52-7c81-a3cc-907f5e4b3c87"
DELIVERY_ID = "0193a3c5-2b3c-7e4f-8a11-1c2d3e4f5a69"
EVENT_ID = "0193a3c4-1a2d-7a6f-b1aa-7e6d3c2f1a98"
SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (documentation)

WebhookId = Annotated[
    str, Path(pattern=ID_PATTERN, examples=[WEBHOOK_ID], description="The webhook's id.")
]
DeliveryId = Annotated[
    str, Path(pattern=ID_PATTERN, examples=[DELIVERY_ID], description="The delivery's id.")
]
EventPattern = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^(\*|[a-z]+(\.[a-z_]+)*)$")
]
InboxIds = Annotated[
    list[Annotated[str, Field(pattern=ID_PATTERN)]] | None,
    Field(max_length=100, description="Only events of these inboxes; null for every inbox."),
]

EVENTS_DESCRIPTION = (
    "Event names or prefixes, matched on dot boundaries: `message.received` also gets "
    "`message.received.spam` and `message.received.unauthenticated`; `message` gets every "
    "message event; `*` (the default) gets everything."
)


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


WEBHOOK_EXAMPLE: dict[str, Any] = {
    "webhook_id": WEBHOOK_ID,
    "url": "https://agent.example.com/hooks/mail",
    "events": ["message.received"],
    "inbox_ids": None,
    "description": "support agent",
    "enabled": True,
    "disabled_reason": None,
    "created_at": s.EXAMPLE_TIME,
    "updated_at": s.EXAMPLE_TIME,
}


class WebhookCreate(BaseModel):
    model_config = _example(
        {"url": "https://agent.example.com/hooks/mail", "events": ["message.received"]}
    )
    url: str = Field(min_length=8, max_length=2048, pattern=s.NO_NUL)
    events: list[EventPattern] = Field(
        default_factory=lambda: [store.ALL],
        min_length=1,
        max_length=50,
        description=EVENTS_DESCRIPTION,
    )
    inbox_ids: InboxIds = None
    description: str = Field("", max_length=500, pattern=s.NO_NUL)


class WebhookUpdate(BaseModel):
    model_config = _example({"events": ["message.received", "message.bounced"]})
    url: str | None = Field(None, min_length=8, max_length=2048, pattern=s.NO_NUL)
    events: list[EventPattern] | None = Field(
        None, min_length=1, max_length=50, description=EVENTS_DESCRIPTION
    )
    inbox_ids: InboxIds = None
    description: str | None = Field(None, max_length=500, pattern=s.NO_NUL)
    enabled: bool | None = None


class Webhook(BaseModel):
    model_config = _example(WEBHOOK_EXAMPLE)
    webhook_id: str
    url: str
    events: list[str]
    inbox_ids: list[str] | None
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled, e.g. a 410 answer.")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(Webhook):
    model_config = _example({**WEBHOOK_EXAMPLE, "secret": SECRET_EXAMPLE})
    secret: str = Field(description="The signing secret, shown only this once.")


class WebhookList(BaseModel):
    model_config = _example({"count": 1, "webhooks": [WEBHOOK_EXAMPLE], "next_page_token": None})
    count: int
    webhooks: list[Webhook]
    next_page_token: str | None


class WebhookSecret(BaseModel):
    model_config = _example(
        {"webhook_id": WEBHOOK_ID, "secret": SECRET_EXAMPLE, "previous_expires_at": s.EXAMPLE_TIME}
    )
    webhook_id: str
    secret: str = Field(description="The new signing secret, shown only this once.")
    previous_expires_at: datetime = Field(description="Until then the old secret signs too.")


class DeliveryAttempt(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="The endpoint's HTTP status; null if none.")
    error: str | None = Field(description="Why there was no answer (timeout, refused, …).")
    response: str = Field(description="The start of the endpoint's answer.")
    duration_ms: int


DELIVERY_EXAMPLE: dict[str, Any] = {
    "delivery_id": DELIVERY_ID,
    "webhook_id": WEBHOOK_ID,
    "event_id": EVENT_ID,
    "event_type": "message.received",
    "status": "succeeded",
    "attempts": 1,
    "next_attempt_at": None,
    "last_attempt_at": s.EXAMPLE_TIME,
    "last_status_code": 200,
    "last_error": None,
    "delivered_at": s.EXAMPLE_TIME,
    "created_at": s.EXAMPLE_TIME,
}


class WebhookDelivery(BaseModel):
    model_config = _example(DELIVERY_EXAMPLE)
    delivery_id: str
    webhook_id: str
    event_id: str = Field(description="Sent as `webhook-id`; the same on every attempt.")
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class WebhookDeliveryDetail(WebhookDelivery):
    model_config = _example({**DELIVERY_EXAMPLE, "attempt_log": []})
    attempt_log: list[DeliveryAttempt] = Field(description="Every request made, oldest first.")


class WebhookDeliveryList(BaseModel):
    model_config = _example({"count": 1, "deliveries": [DELIVERY_EXAMPLE], "next_page_token": None})
    count: int
    deliveries: list[WebhookDelivery]
    next_page_token: str | None


class WebhookTestSent(BaseModel):
    model_config = _example({"delivery_id": DELIVERY_ID, "event_id": EVENT_ID})
    delivery_id: str
    event_id: str


def webhook_schema(w: store.Webhook) -> Webhook:
    return Webhook(
        webhook_id=w.id,
        url=w.url,
        events=w.events,
        inbox_ids=w.inbox_ids,
        description=w.description,
        enabled=w.enabled,
        disabled_reason=w.disabled_reason,
        created_at=w.created_at,
        updated_at=w.updated_at,
    )


def delivery_schema(d: store.Delivery) -> dict[str, Any]:
    return {
        "delivery_id": d.id,
        "webhook_id": d.webhook_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_attempt_at": d.last_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
        "created_at": d.created_at,
    }


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422, "validation_error", message, fields=[{"field": f"body.{field}", "message": message}]
    )


async def _check(ctx: ApiContext, account_id: str, body: WebhookCreate | WebhookUpdate) -> None:
    """The URL passes the SSRF check, the events exist, the inboxes are the account's."""
    if body.url is not None:
        try:
            await check_target(
                body.url, ctx.resolver, allow_private=ctx.events.allow_private_targets
            )
        except TargetRefused as exc:
            raise _invalid("url", str(exc)) from None
    for pattern in body.events or ():
        if not store.valid_pattern(pattern):
            raise _invalid("events", f"{pattern!r} matches no event type")
    if body.inbox_ids:
        async with ctx.db.read() as conn:
            known = await conn.scalar(
                select(func.count()).where(
                    m.inboxes.c.id.in_(set(body.inbox_ids)), m.inboxes.c.account_id == account_id
                )
            )
        if known != len(set(body.inbox_ids)):
            raise _invalid("inbox_ids", "no such inbox in this account")


def _wake(ctx: ApiContext) -> None:
    if ctx.dispatcher is not None:
        ctx.dispatcher.endpoints_changed()


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Create a webhook",
    description="Events of the account (of `inbox_ids` only, when given) whose type matches "
    "`events` are POSTed to `url` as JSON `{type, event_id, timestamp, data}`, signed by the "
    "Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature`, also "
    "as `svix-*`), retried for about 38 hours until a 2xx; a 410 disables the endpoint. The "
    "URL may not reach private, loopback or link-local addresses. The `secret` is shown once.",
)
async def create_webhook(body: WebhookCreate, owner: AccountPrincipal, ctx: Ctx) -> WebhookCreated:
    await _check(ctx, owner.account_id, body)
    async with ctx.db.write() as conn:
        made = await store.create_webhook(
            conn,
            account_id=owner.account_id,
            url=body.url,
            events=list(dict.fromkeys(body.events)),
            inbox_ids=None if body.inbox_ids is None else list(dict.fromkeys(body.inbox_ids)),
            description=body.description,
            secret=new_secret(),
            now=ctx.clock.now(),
        )
    log.info("event=webhook_created account_id=%s webhook_id=%s", owner.account_id, made.id)
    return WebhookCreated(**webhook_schema(made).model_dump(), secret=made.secret)


@router.get(
    "/webhooks",
    response_model=WebhookList,
    summary="List webhooks",
    description="The account's webhooks, newest first.",
)
async def list_webhooks(
    owner: AccountPrincipal, ctx: Ctx, limit: Limit = 50, page_token: PageToken = None
) -> WebhookList:
    async with ctx.db.read() as conn:
        found, more = await store.list_webhooks(
            conn, owner.account_id, limit=limit, after_id=page_token or None
        )
    return WebhookList(
        count=len(found), webhooks=[webhook_schema(w) for w in found], next_page_token=more
    )


@router.get(
    "/webhooks/{webhook_id}",
    response_model=Webhook,
    summary="Get a webhook",
    description="One webhook of the account (never its secret).",
)
async def get_webhook(webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx) -> Webhook:
    async with ctx.db.read() as conn:
        found = await store.get_webhook(conn, owner.account_id, webhook_id)
    if found is None:
        raise not_found("webhook")
    return webhook_schema(found)


async def _update(
    ctx: ApiContext, account_id: str, webhook_id: str, changes: dict[str, Any]
) -> Webhook:
    async with ctx.db.write() as conn:
        found = await store.update_webhook(
            conn, account_id, webhook_id, changes, now=ctx.clock.now()
        )
    if found is None:
        raise not_found("webhook")
    _wake(ctx)
    return webhook_schema(found)


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=Webhook,
    summary="Update a webhook",
    description="Changes the URL, events, inboxes (null: every inbox), description or enabled "
    "state. Enabling clears `disabled_reason`; deliveries held while disabled go out.",
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, owner: AccountPrincipal, ctx: Ctx
) -> Webhook:
    await _check(ctx, owner.account_id, body)
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "events", "description", "enabled"):
        if key in changes and changes[key] is None:
            del changes[key]
    if "enabled" in changes:
        changes["disabled_reason"] = None if changes["enabled"] else "disabled through the API"
    return await _update(ctx, owner.account_id, webhook_id, changes)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook",
    description="Deletes the endpoint with its delivery log; nothing more is sent to it.",
)
async def delete_webhook(webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx) -> Response:
    async with ctx.db.write() as conn:
        deleted = await store.delete_webhook(conn, owner.account_id, webhook_id)
    if not deleted:
        raise not_found("webhook")
    log.info("event=webhook_deleted account_id=%s webhook_id=%s", owner.account_id, webhook_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/enable",
    response_model=Webhook,
    summary="Enable a webhook",
    description="Deliveries resume, those held while it was disabled included.",
)
async def enable_webhook(webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx) -> Webhook:
    changes = {"enabled": True, "disabled_reason": None}
    return await _update(ctx, owner.account_id, webhook_id, changes)


@router.post(
    "/webhooks/{webhook_id}/disable",
    response_model=Webhook,
    summary="Disable a webhook",
    description="Nothing is sent until it is enabled; events meanwhile are not queued for it.",
)
async def disable_webhook(webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx) -> Webhook:
    changes = {"enabled": False, "disabled_reason": "disabled through the API"}
    return await _update(ctx, owner.account_id, webhook_id, changes)


@router.post(
    "/webhooks/{webhook_id}/secret/rotate",
    response_model=WebhookSecret,
    summary="Rotate a webhook's secret",
    description="Makes a new secret, shown only in this answer. For 24 hours requests carry a "
    "signature by the old secret too, so receivers can switch without losing events.",
)
async def rotate_secret(webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx) -> WebhookSecret:
    now = ctx.clock.now()
    async with ctx.db.write() as conn:
        found = await store.get_webhook(conn, owner.account_id, webhook_id)
        if found is None:
            raise not_found("webhook")
        secret = new_secret()
        await store.update_webhook(
            conn,
            owner.account_id,
            webhook_id,
            {
                "secret": secret,
                "previous_secret": found.secret,
                "previous_secret_expires_at": now + ROTATION_GRACE,
            },
            now=now,
        )
    log.info("event=webhook_secret_rotated webhook_id=%s", webhook_id)
    return WebhookSecret(
        webhook_id=webhook_id, secret=secret, previous_expires_at=now + ROTATION_GRACE
    )


@router.post(
    "/webhooks/{webhook_id}/test",
    status_code=202,
    response_model=WebhookTestSent,
    summary="Send a test event",
    description="Queues a `webhook.test` event to this endpoint only, whatever its filters; "
    "follow it in the delivery log.",
)
async def send_test_event(
    webhook_id: WebhookId, owner: AccountPrincipal, ctx: Ctx
) -> WebhookTestSent:
    now = ctx.clock.now()
    event_id = new_id()
    payload = {
        "type": store.TEST_EVENT,
        "event_id": event_id,
        "timestamp": now.isoformat(),
        "data": {"webhook_id": webhook_id, "message": "A test event from MailboxKit."},
    }
    async with ctx.db.write() as conn:
        if await store.get_webhook(conn, owner.account_id, webhook_id) is None:
            raise not_found("webhook")
        delivery_id = await dispatch.add_test_delivery(conn, webhook_id, payload, now=now)
    _wake(ctx)
    return WebhookTestSent(delivery_id=delivery_id, event_id=event_id)


async def _owned(ctx: ApiContext, account_id: str, webhook_id: str) -> None:
    async with ctx.db.read() as conn:
        if await store.get_webhook(conn, account_id, webhook_id) is None:
            raise not_found("webhook")


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=WebhookDeliveryList,
    summary="List a webhook's deliveries",
    description="The delivery log, newest first: one entry per event sent (or being sent) to "
    "the endpoint, with its state and last answer.",
)
async def list_deliveries(
    webhook_id: WebhookId,
    owner: AccountPrincipal,
    ctx: Ctx,
    limit: Limit = 50,
    page_token: PageToken = None,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    event_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> WebhookDeliveryList:
    await _owned(ctx, owner.account_id, webhook_id)
    async with ctx.db.read() as conn:
        found, more = await store.list_deliveries(
            conn,
            webhook_id,
            limit=limit,
            after_id=page_token or None,
            status=status,
            event_id=event_id,
        )
    return WebhookDeliveryList(
        count=len(found),
        deliveries=[WebhookDelivery(**delivery_schema(d)) for d in found],
        next_page_token=more,
    )


async def _delivery(ctx: ApiContext, webhook_id: str, delivery_id: str) -> WebhookDeliveryDetail:
    async with ctx.db.read() as conn:
        found = await store.get_delivery(conn, webhook_id, delivery_id)
    if found is None:
        raise not_found("delivery")
    return WebhookDeliveryDetail(
        **delivery_schema(found),
        attempt_log=[
            DeliveryAttempt(
                attempt=a.attempt,
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                error=a.error,
                response=a.response,
                duration_ms=a.duration_ms,
            )
            for a in found.attempt_log
        ],
    )


@router.get(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="Get a delivery",
    description="One delivery with every attempt made.",
)
async def get_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, owner: AccountPrincipal, ctx: Ctx
) -> WebhookDeliveryDetail:
    await _owned(ctx, owner.account_id, webhook_id)
    return await _delivery(ctx, webhook_id, delivery_id)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=WebhookDeliveryDetail,
    summary="Replay a delivery",
    description="Sends the event again now, with the same `webhook-id`, whatever the "
    "delivery's state. A pending delivery goes on with its retries; a replay of a finished "
    "one is a single further attempt.",
)
async def replay_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, owner: AccountPrincipal, ctx: Ctx
) -> WebhookDeliveryDetail:
    await _owned(ctx, owner.account_id, webhook_id)
    async with ctx.db.write() as conn:
        if not await dispatch.replay(conn, webhook_id, delivery_id, now=ctx.clock.now()):
            raise not_found("delivery")
    _wake(ctx)
    return await _delivery(ctx, webhook_id, delivery_id)
