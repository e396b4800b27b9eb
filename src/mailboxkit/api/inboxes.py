"""``/inboxes``: create, list, get, update and delete inboxes (with their mail and blobs)."""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal, Principal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, inbox_limit_error, not_found
from mailboxkit.api.params import InboxId, Limit, PageToken
from mailboxkit.store import accounts, inboxes, quota
from mailboxkit.store.domains import find_usable_domain
from mailboxkit.store.sweep import delete_unreferenced

log = logging.getLogger(__name__)

router = APIRouter(tags=["inboxes"], responses=s.AUTHENTICATED)


def inbox_schema(i: inboxes.InboxRecord) -> s.Inbox:
    return s.Inbox(
        inbox_id=i.id,
        email=i.address,
        username=i.local_part,
        domain=i.domain,
        display_name=i.display_name,
        metadata=i.metadata,
        created_at=i.created_at,
    )


@router.post(
    "/inboxes",
    status_code=201,
    response_model=s.Inbox,
    summary="Create an inbox",
    description="Makes `username@domain` (a random username when omitted, the server's domain "
    "when no domain is given). The domain must be the account's or a shared one. Needs an "
    "account key. An account with as many inboxes as its limit allows gets 403 "
    "`quota_exceeded`.",
    responses=s.error_responses(403, 404, 409),
)
async def create_inbox(body: s.InboxCreate, owner: AccountPrincipal, ctx: Ctx) -> s.Inbox:
    domain = (body.domain or ctx.config.domain).rstrip(".").lower()
    username = (body.username or f"agent-{secrets.token_hex(4)}").lower()
    try:
        async with ctx.db.write() as conn:
            if await find_usable_domain(conn, owner.account_id, domain) is None:
                raise not_found("domain")
            made = await accounts.create_inbox(
                conn,
                account_id=owner.account_id,
                address=f"{username}@{domain}",
                now=ctx.clock.now(),
                display_name=body.display_name,
                metadata=body.metadata,
            )
            record = await inboxes.get_inbox(conn, owner.scope, made.id)
    except (accounts.AddressTaken, IntegrityError):
        raise ApiError(409, "conflict", "this address is taken") from None
    except quota.InboxLimitReached:
        raise inbox_limit_error() from None
    assert record is not None
    ctx.routing_changed()  # its address may have gone to a catch-all until now
    log.info("event=inbox_created account_id=%s inbox_id=%s", owner.account_id, made.id)
    return inbox_schema(record)


@router.get(
    "/inboxes",
    response_model=s.InboxList,
    summary="List inboxes",
    description="The account's inboxes, newest first (an inbox key sees only its inbox).",
    responses=s.error_responses(422),
)
async def list_inboxes(
    owner: Principal, ctx: Ctx, limit: Limit = 50, page_token: PageToken = None
) -> s.InboxList:
    async with ctx.db.read() as conn:
        found, more = await inboxes.list_inboxes_page(
            conn, owner.scope, limit=limit, after_id=page_token or None
        )
    return s.InboxList(
        count=len(found), inboxes=[inbox_schema(i) for i in found], next_page_token=more
    )


@router.get(
    "/inboxes/{inbox_id}",
    response_model=s.Inbox,
    summary="Get an inbox",
    description="One inbox of the account.",
    responses=s.error_responses(404),
)
async def get_inbox(inbox_id: InboxId, owner: Principal, ctx: Ctx) -> s.Inbox:
    async with ctx.db.read() as conn:
        found = await inboxes.get_inbox(conn, owner.scope, inbox_id)
    if found is None:
        raise not_found("inbox")
    return inbox_schema(found)


@router.patch(
    "/inboxes/{inbox_id}",
    response_model=s.Inbox,
    summary="Update an inbox",
    description="Changes the display name and/or replaces the metadata.",
    responses=s.error_responses(404),
)
async def update_inbox(
    inbox_id: InboxId, body: s.InboxUpdate, owner: Principal, ctx: Ctx
) -> s.Inbox:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    async with ctx.db.write() as conn:
        found = await inboxes.update_inbox(conn, owner.scope, inbox_id, changes)
    if found is None:
        raise not_found("inbox")
    return inbox_schema(found)


@router.delete(
    "/inboxes/{inbox_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an inbox",
    description="Deletes the inbox, its folders, threads and messages, its inbox keys, and "
    "the stored messages and attachments no other message shares (attachments stored in the "
    "last hour go with the next store sweep). Needs an account key.",
    responses=s.error_responses(403, 404),
)
async def delete_inbox(inbox_id: InboxId, owner: AccountPrincipal, ctx: Ctx) -> Response:
    async with ctx.db.write() as conn:
        orphans = await inboxes.delete_inbox(conn, owner.scope, inbox_id)
    if orphans is None:
        raise not_found("inbox")
    ctx.routing_changed()  # it may have been a catch-all, or had its own sender rules
    ctx.keys.clear()  # the inbox's own keys went with it
    if orphans:
        # Re-checked after commit, just before deleting: see store/inboxes.py.
        orphans = await delete_unreferenced(ctx.db, ctx.blobs, orphans, now=ctx.clock.now())
    log.info(
        "event=inbox_deleted account_id=%s inbox_id=%s blobs_deleted=%d",
        owner.account_id,
        inbox_id,
        len(orphans),
    )
    return Response(status_code=204)
