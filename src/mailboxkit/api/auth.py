"""Authentication of API requests: bearer keys, their scope, rate limits, usage.

Order per request: if the client address has failed to authenticate too often in the current
window, refuse it (429, the key is not even looked up); else find the live key by its hash. A
missing or wrong key is a 401 and counts one failure for the address; a good key counts the hit
in the key's own rate-limit window and, when allowed, the request in the account's usage.
Exhausted windows answer 429 with Retry-After.

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
- A request with a good key writes nothing to the database: the key is found with a read (or
  in this process's short-lived cache of checked keys, ``KeyCache``), its last-used time is
  written at most once a minute, and the key's limit and the usage count are
  kept in memory and flushed about once a second (``store/counters.py``; :func:`flush_counters`
  runs in the background and before usage is read). Failures are rare and written at once.
- The key's id goes into the request state for the access log; the key itself is never logged.
- A request the server makes to itself on behalf of a request it already counted (an MCP tool
  call is the ``/mcp`` request's work) carries :data:`ALREADY_COUNTED` in its ASGI scope, which
  no client can set: its key is checked again, but it is not counted a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.errors import ApiError
from mailboxkit.store import ratelimit
from mailboxkit.store.accounts import KeyOwner, authenticate_key, hash_key, record_key_use

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer mbk_…`. Account keys see the whole "
    "account; inbox keys see only their inbox.",
)

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
ALREADY_COUNTED = "mailboxkit.already_counted"
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
    client = await refuse_blocked(request, ctx)
    owner = None
    if credentials is not None:
        digest = hash_key(credentials.credentials)
        owner = await _find_key(ctx, credentials.credentials, digest)
    if owner is None:
        await count_failure(ctx, client)
        message = (
            "missing API key: send Authorization: Bearer mbk_…"
            if credentials is None
            else "invalid or revoked API key"
        )
        raise ApiError(401, "unauthorized", message, headers=UNAUTHORIZED)
    if owner.use_is_stale(now):
        async with ctx.db.write() as conn:
            await record_key_use(conn, owner.key_id, now=now)
        if ctx.config.key_cache_seconds:
            ctx.keys.put(digest, replace(owner, last_used_at=now))
    request.state.key_id = owner.key_id
    request.state.account_id = owner.account_id
    if request.scope.get(ALREADY_COUNTED):
        return owner
    verdict = ctx.counters.hit(f"key:{owner.key_id}", ctx.config.requests_per_key, now=now)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this API key; retry in {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    ctx.counters.count_api_request(owner.account_id, now=now)
    return owner


async def _find_key(ctx: ApiContext, secret: str, digest: str) -> KeyOwner | None:
    """The live key ``secret`` (whose hash is ``digest``), from the cache or the database."""
    ttl = ctx.config.key_cache_seconds
    if ttl and (cached := ctx.keys.get(digest, ttl)) is not None:
        return cached
    async with ctx.db.read() as conn:
        owner = await authenticate_key(conn, secret)
    if owner is not None and ttl:
        ctx.keys.put(digest, owner)
    return owner


async def refuse_blocked(request: Request, ctx: ApiContext) -> str:
    """The client's network (see :func:`client_network`), once it is known not to be blocked
    for failing to authenticate too often; 429 if it is."""
    client = client_network(request)
    now = ctx.clock.now()
    if ctx.failed_clients.suspect(client, now.timestamp()):
        async with ctx.db.read() as conn:
            blocked = await ratelimit.peek(
                conn, _failure_bucket(client), ctx.config.auth_failures_per_ip, now=now
            )
        if not blocked.allowed:
            raise _too_many_failures(blocked.retry_after)
    return client


def _failure_bucket(client: str) -> str:
    return f"auth-fail:{client}"


async def count_failure(ctx: ApiContext, client: str) -> None:
    """Count a failed authentication of ``client``; 429 once it has failed too often."""
    failures = ctx.config.auth_failures_per_ip
    if not failures.hits:
        return
    now = ctx.clock.now()
    async with ctx.db.write() as conn:
        failed = await ratelimit.hit(conn, _failure_bucket(client), failures, now=now)
    ctx.failed_clients.note(client, now.timestamp(), failures.window)
    if failed.hits == failures.hits:
        log.warning("event=api_auth_blocked client=%s failures=%d", client, failed.hits)
    if not failed.allowed:
        raise _too_many_failures(failed.retry_after)


async def flush_counters(ctx: ApiContext) -> None:
    """Write what the requests since the last flush counted (nothing to do: no transaction)."""
    if ctx.counters.dirty:
        async with ctx.db.write() as conn:
            await ctx.counters.flush(conn, now=ctx.clock.now())


async def keep_counters_flushed(ctx: ApiContext, interval: float = 1.0) -> None:
    """Flush the counters every ``interval`` seconds until cancelled (then flush once more)."""
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await flush_counters(ctx)
            except Exception:  # the counts stay in memory for the next try
                log.exception("event=api_counters_flush_failed")
    finally:
        with contextlib.suppress(Exception):
            await flush_counters(ctx)


Principal = Annotated[KeyOwner, Depends(authenticate)]


async def account_key(owner: Principal) -> KeyOwner:
    """Only keys of the whole account: managing the account, its keys, domains and inboxes."""
    if owner.inbox_id is not None:
        raise ApiError(403, "forbidden", "this API key is limited to one inbox")
    return owner


AccountPrincipal = Annotated[KeyOwner, Depends(account_key)]
