"""``/api-keys``: make (shown once), list (prefix only) and revoke the account's keys."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import not_found
from mailboxkit.api.params import ApiKeyId
from mailboxkit.store import accounts
from mailboxkit.store.inboxes import visible_inbox

log = logging.getLogger(__name__)

router = APIRouter(tags=["api-keys"], responses=s.AUTHENTICATED | s.error_responses(403))


def _key(k: accounts.ApiKey) -> s.ApiKey:
    return s.ApiKey(
        api_key_id=k.id,
        name=k.name,
        prefix=k.prefix,
        inbox_id=k.inbox_id,
        created_at=k.created_at,
        last_used_at=k.last_used_at,
        revoked_at=k.revoked_at,
    )


@router.post(
    "/api-keys",
    status_code=201,
    response_model=s.ApiKeyCreated,
    summary="Create an API key",
    description="Makes a key for the whole account, or for one inbox with `inbox_id`. The "
    "secret is in the response only this once; it is stored hashed.",
    responses=s.error_responses(404),
)
async def create_api_key(
    body: s.ApiKeyCreate, owner: AccountPrincipal, ctx: Ctx
) -> s.ApiKeyCreated:
    now = ctx.clock.now()
    async with ctx.db.write() as conn:
        if body.inbox_id is not None and not await visible_inbox(conn, owner.scope, body.inbox_id):
            raise not_found("inbox")
        made = await accounts.create_api_key(
            conn, account_id=owner.account_id, now=now, inbox_id=body.inbox_id, name=body.name
        )
        listed = await accounts.get_api_key(conn, owner.account_id, made.id)
    assert listed is not None
    log.info("event=api_key_created account_id=%s key_id=%s", owner.account_id, made.id)
    return s.ApiKeyCreated(**_key(listed).model_dump(), api_key=made.secret)


@router.get(
    "/api-keys",
    response_model=s.ApiKeyList,
    summary="List API keys",
    description="Every key of the account, revoked ones included, without their secrets.",
)
async def list_api_keys(owner: AccountPrincipal, ctx: Ctx) -> s.ApiKeyList:
    async with ctx.db.read() as conn:
        keys = await accounts.list_api_keys(conn, owner.account_id)
    return s.ApiKeyList(count=len(keys), api_keys=[_key(k) for k in keys])


@router.delete(
    "/api-keys/{api_key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key",
    description="The key stops working at once. Revoking a revoked key is not an error.",
    responses=s.error_responses(404),
)
async def revoke_api_key(api_key_id: ApiKeyId, owner: AccountPrincipal, ctx: Ctx) -> Response:
    async with ctx.db.write() as conn:
        found = await accounts.revoke_api_key(
            conn, owner.account_id, api_key_id, now=ctx.clock.now()
        )
    ctx.keys.clear()  # this process stops accepting it now
    if not found:
        raise not_found("API key")
    log.info("event=api_key_revoked account_id=%s key_id=%s", owner.account_id, api_key_id)
    return Response(status_code=204)
