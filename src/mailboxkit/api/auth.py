"""Authentication of API requests: bearer keys, their scope, rate limits, usage.

Order per request, in one write transaction: if the client address has failed to authenticate
too often in the current window, refuse it (429, the key is not even looked up); else find the
live key by its hash (and record its last use). A missing or wrong key is a 401 and counts one
failure for the address; a good key counts the hit in the key's own rate-limit window and, when
allowed, the request in the account's usage. Exhausted windows answer 429 with Retry-After.

Implementation notes:

- Failures are counted per client address, IPv6 by its /64 (one host commonly holds a whole
  /64). The address is the peer's, or the X-Forwarded-For of a trusted proxy
  (``MAILBOXKIT_HTTP_TRUSTED_PROXIES``): behind an untrusted proxy every client shares one
  address, and one of them could lock the others out.
- While an address is blocked, valid keys from it are refused too: otherwise a guesser would
  still learn which of its guesses is right, at full speed. Blocked requests do not extend the
  block; it ends with the window (fixed windows, see ``store/ratelimit.py``).
- Only addresses this process saw fail lately (``FailedClients``) are checked in the database
  before their key is looked up; the others pay nothing for the limit. With several processes
  (PostgreSQL), failures count across all of them, but a valid key is refused by a process
  only once that process has seen a failure from the address.
- The key's id goes into the request state for the access log; the key itself is never logged.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.store import ratelimit, usage
from mailboxkit.store.accounts import KeyOwner, authenticate_key

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer mbk_…`. Account keys see the whole "
    "account; inbox keys see only their inbox.",
)

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
IPV6_PREFIX = 64


def client_network(request: Request) -> str:
    """The client's address as rate limits count it: IPv4 as is, IPv6 as its /64."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def _too_many_failures(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many failed authentications from this address; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


async def authenticate(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyOwner:
    now = ctx.clock.now()
    failures = ctx.config.auth_failures_per_ip
    client = client_network(request)
    bucket = f"auth-fail:{client}"
    owner: KeyOwner | None = None
    verdict: ratelimit.Verdict | None = None
    failed: ratelimit.Verdict | None = None
    suspect = ctx.failed_clients.suspect(client, now.timestamp())
    async with ctx.db.write() as conn:
        blocked = ratelimit.Verdict(True, 0, 0)
        if suspect:
            blocked = await ratelimit.peek(conn, bucket, failures, now=now)
        if blocked.allowed:
            if credentials is not None:
                owner = await authenticate_key(conn, credentials.credentials, now=now)
            if owner is None:
                failed = await ratelimit.hit(conn, bucket, failures, now=now)
            else:
                key_bucket = f"key:{owner.key_id}"
                verdict = await ratelimit.hit(
                    conn, key_bucket, ctx.config.requests_per_key, now=now
                )
                if verdict.allowed:
                    await usage.count_api_request(conn, owner.account_id, now=now)
    if not blocked.allowed:
        raise _too_many_failures(blocked.retry_after)
    if failed is not None and failures.hits:
        ctx.failed_clients.note(client, now.timestamp(), failures.window)
        if not failed.allowed:
            raise _too_many_failures(failed.retry_after)
    if owner is None or verdict is None:
        if failed is not None and failures.hits and failed.hits == failures.hits:
            log.warning("event=api_auth_blocked client=%s failures=%d", client, failed.hits)
        message = (
            "missing API key: send Authorization: Bearer mbk_…"
            if credentials is None
            else "invalid or revoked API key"
        )
        raise ApiError(401, "unauthorized", message, headers=UNAUTHORIZED)
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
