"""``POST /register``: a new account with one inbox on the server's domain, and its key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from mailboxkit.api import schemas as s
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, inbox_limit_error
from mailboxkit.store import accounts, quota, ratelimit

log = logging.getLogger(__name__)

router = APIRouter(tags=["account"])


@router.post(
    "/register",
    status_code=201,
    response_model=s.RegisterResponse,
    summary="Register a new account",
    description="Creates an account with one inbox on the server's domain, named after `name`, "
    "and returns an account API key, shown only once. The operator may turn registration "
    "off (403). Limited per client address and per owner email (429 with Retry-After).",
    responses=s.error_responses(403, 409, 413, 422, 429),
)
async def register(body: s.RegisterRequest, request: Request, ctx: Ctx) -> s.RegisterResponse:
    cfg = ctx.config
    if not cfg.registration_enabled:
        raise ApiError(403, "forbidden", "registration is turned off on this server")
    now = ctx.clock.now()
    ip = request.client.host if request.client else "unknown"
    owner_email = str(body.owner_email).lower()
    async with ctx.db.write() as conn:
        verdicts = [
            await ratelimit.hit(conn, f"register-ip:{ip}", cfg.registration_per_ip, now=now),
            await ratelimit.hit(
                conn, f"register-email:{owner_email}", cfg.registration_per_email, now=now
            ),
        ]
    refused = [v.retry_after for v in verdicts if not v.allowed]
    if refused:
        log.info("event=registration_rate_limited client=%s", ip)
        raise ApiError(
            429,
            "rate_limited",
            "too many registrations; try again later",
            headers={"Retry-After": str(max(refused))},
        )
    try:
        async with ctx.db.write() as conn:
            made = await accounts.register(
                conn,
                name=body.name,
                owner_email=owner_email,
                domain=cfg.domain,
                now=now,
                limits=cfg.account_limits,
            )
    except (accounts.AddressTaken, IntegrityError):
        raise ApiError(409, "conflict", "no free address for this name; try another") from None
    except quota.InboxLimitReached:
        raise inbox_limit_error() from None
    ctx.routing_changed()  # its address may have gone to a catch-all until now
    log.info(
        "event=registered account_id=%s inbox_id=%s client=%s",
        made.account_id,
        made.inbox.id,
        ip,
    )
    return s.RegisterResponse(
        api_key=made.key.secret,
        email=made.inbox.address,
        inbox_id=made.inbox.id,
        owner_email=owner_email,
        message="Keep the API key: it is shown only once.",
    )
