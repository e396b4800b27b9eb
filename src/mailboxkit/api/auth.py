"""Authentication of API requests: bearer keys, their scope, the per-key rate limit, usage.

Order per request, in one write transaction: find the live key by its hash (and record its last
use), count the hit in the key's rate-limit window, and, when allowed, count the request in the
account's usage. A missing or wrong key is a 401, an exhausted window a 429 with Retry-After.
The key's id goes into the request state for the access log; the key itself is never logged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.store import ratelimit, usage
from mailboxkit.store.accounts import KeyOwner, authenticate_key

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer mbk_…`. Account keys see the whole "
    "account; inbox keys see only their inbox.",
)

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def authenticate(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyOwner:
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send Authorization: Bearer mbk_…",
            headers=UNAUTHORIZED,
        )
    now = ctx.clock.now()
    async with ctx.db.write() as conn:
        owner = await authenticate_key(conn, credentials.credentials, now=now)
        if owner is None:
            verdict = None
        else:
            bucket = f"key:{owner.key_id}"
            verdict = await ratelimit.hit(conn, bucket, ctx.config.requests_per_key, now=now)
            if verdict.allowed:
                await usage.count_api_request(conn, owner.account_id, now=now)
    if owner is None or verdict is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key", headers=UNAUTHORIZED)
    request.state.key_id = owner.key_id
    request.state.account_id = owner.account_id
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this API key; retry in {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    return owner


Principal = Annotated[KeyOwner, Depends(authenticate)]


async def account_key(owner: Principal) -> KeyOwner:
    """Only keys of the whole account: managing the account, its keys, domains and inboxes."""
    if owner.inbox_id is not None:
        raise ApiError(403, "forbidden", "this API key is limited to one inbox")
    return owner


AccountPrincipal = Annotated[KeyOwner, Depends(account_key)]
