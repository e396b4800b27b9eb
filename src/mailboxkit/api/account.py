"""``/account`` and ``/usage``: the caller's account, its deletion, and what it has used."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mailboxkit.api import billing
from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal, Principal, flush_counters
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import utc
from mailboxkit.store import accounts, erasure, quota, usage

log = logging.getLogger(__name__)

router = APIRouter(tags=["account"], responses=s.AUTHENTICATED)


def _account(a: accounts.Account, q: quota.Quota) -> s.Account:
    return s.Account(
        account_id=a.id,
        name=a.name,
        owner_email=a.owner_email,
        status=a.status,
        created_at=a.created_at,
        quota=_quota(q),
    )


def _quota(q: quota.Quota) -> s.AccountQuota:
    return s.AccountQuota(
        limits=s.QuotaLimits(
            storage_bytes=q.limits.storage,
            inboxes=q.limits.inboxes,
            sends_per_day=q.limits.sends_per_day,
        ),
        used=s.QuotaUsage(
            storage_bytes=q.storage_used, inboxes=q.inboxes, sends_today=q.sends_today
        ),
    )


async def _read_quota(ctx: Ctx, account_id: str) -> quota.Quota:
    async with ctx.db.read() as conn:
        found = await quota.get_quota(conn, account_id, now=ctx.clock.now())
    if found is None:
        raise not_found("account")
    return found


@router.get(
    "/account",
    response_model=s.Account,
    summary="Get the account",
    description="The account the API key belongs to, with its quota: the limits the operator "
    "set (null: unlimited) and what it uses of them now.",
    responses=s.error_responses(404),
)
async def get_account(owner: Principal, ctx: Ctx) -> s.Account:
    async with ctx.db.read() as conn:
        found = await accounts.get_account(conn, owner.account_id)
    if found is None:
        raise not_found("account")
    return _account(found, await _read_quota(ctx, owner.account_id))


@router.patch(
    "/account",
    response_model=s.Account,
    summary="Update the account",
    description="Changes the account's name and/or owner email. Needs an account key.",
    responses=s.error_responses(403, 404),
)
async def update_account(body: s.AccountUpdate, owner: AccountPrincipal, ctx: Ctx) -> s.Account:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "owner_email" in changes:
        changes["owner_email"] = str(changes["owner_email"]).lower()
    async with ctx.db.write() as conn:
        found = await accounts.update_account(conn, owner.account_id, changes)
    if found is None:
        raise not_found("account")
    return _account(found, await _read_quota(ctx, owner.account_id))


@router.delete(
    "/account",
    status_code=204,
    response_class=Response,
    summary="Delete the account and all its data",
    description="Deletes the account at once and for good: its inboxes with all their mail, "
    "threads and attachments, its domains, API keys (this one too), webhooks, queued and sent "
    "mail, drafts, sender rules, suppressions and usage. Stored messages and attachments go "
    "with it unless another account's messages share them (attachments stored in the last "
    "hour go with the next store sweep). With billing on, its Stripe subscriptions are "
    "canceled first (503 or 502, deleting nothing, when that fails). `confirm` must be the "
    "account's id. Needs an account key. 409 while another account has inboxes on one of its "
    "domains.",
    responses={**s.error_responses(403, 409), **billing.STRIPE_ERRORS},
)
async def delete_account(
    request: Request,
    owner: AccountPrincipal,
    ctx: Ctx,
    confirm: Annotated[str, Query(description="The account's id, to confirm the deletion.")],
) -> Response:
    if confirm != owner.account_id:
        raise ApiError(
            422,
            "validation_error",
            "confirm must be the account's id",
            fields=[{"field": "query.confirm", "message": "must be the account's id"}],
        )
    try:
        async with billing.stripe_errors("cancel", owner.account_id):
            erased, _ = await billing.close_account(
                billing.billing_of(request.app),
                ctx.db,
                ctx.blobs,
                owner.account_id,
                now=ctx.clock.now(),
            )
    except erasure.DomainShared:
        raise ApiError(
            409, "conflict", "another account has inboxes on one of this account's domains"
        ) from None
    if erased is None:
        raise not_found("account")
    ctx.routing_changed()
    ctx.keys.clear()
    log.info(
        "event=account_deleted account_id=%s inboxes=%d blobs_deleted=%d",
        owner.account_id,
        erased.inboxes,
        erased.blobs,
    )
    return Response(status_code=204)


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(start: datetime) -> datetime:
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


@router.get(
    "/usage",
    response_model=s.Usage,
    summary="Get usage counters",
    description="API requests, messages received and messages sent by the account between "
    "`since` (default: the start of this month, UTC) and `until` (default: the start of "
    "next month); and the account's quota (limits and use now).",
)
async def get_usage(
    owner: Principal,
    ctx: Ctx,
    since: Annotated[datetime | None, Query(examples=["2026-11-01T00:00:00Z"])] = None,
    until: Annotated[datetime | None, Query(examples=["2026-12-01T00:00:00Z"])] = None,
) -> s.Usage:
    start = utc(since, "since") or _month_start(ctx.clock.now().astimezone(UTC))
    end = utc(until, "until") or _next_month(_month_start(start))
    if end <= start:
        raise ApiError(
            422,
            "validation_error",
            "until must be after since",
            fields=[{"field": "query.until", "message": "must be after since"}],
        )
    await flush_counters(ctx)  # this very request included
    async with ctx.db.read() as conn:
        counted = await usage.usage(conn, owner.account_id, since=start, until=end)
    return s.Usage(
        account_id=owner.account_id,
        since=start,
        until=end,
        api_requests=counted.api_requests,
        messages_received=counted.messages_received,
        messages_sent=counted.messages_sent,
        quota=_quota(await _read_quota(ctx, owner.account_id)),
    )
