"""``/domains``: the account's own domains, and the operator's shared ones (read-only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import DomainId
from mailboxkit.store import domains

router = APIRouter(tags=["domains"], responses=s.AUTHENTICATED | s.error_responses(403))


def _domain(d: domains.Domain) -> s.Domain:
    return s.Domain(
        domain_id=d.id,
        domain=d.name,
        shared=d.account_id is None,
        verified=d.verified_at is not None,
        verified_at=d.verified_at,
        inbox_count=d.inbox_count,
        created_at=d.created_at,
    )


@router.post(
    "/domains",
    status_code=201,
    response_model=s.Domain,
    summary="Add a domain",
    description="Adds a domain to the account, unverified. Mail reaches its inboxes once its "
    "MX record points at this server. A name already on the server is a conflict.",
    responses=s.error_responses(409),
)
async def create_domain(body: s.DomainCreate, owner: AccountPrincipal, ctx: Ctx) -> s.Domain:
    try:
        async with ctx.db.write() as conn:
            made = await domains.create_domain(
                conn, owner.account_id, body.domain, now=ctx.clock.now()
            )
    except domains.DomainTaken:
        raise ApiError(409, "conflict", "this domain is already on the server") from None
    return _domain(made)


@router.get(
    "/domains",
    response_model=s.DomainList,
    summary="List domains",
    description="The account's domains and the operator's shared ones, by name.",
)
async def list_domains(owner: AccountPrincipal, ctx: Ctx) -> s.DomainList:
    async with ctx.db.read() as conn:
        found = await domains.list_domains(conn, owner.account_id)
    return s.DomainList(count=len(found), domains=[_domain(d) for d in found])


@router.get(
    "/domains/{domain_id}",
    response_model=s.Domain,
    summary="Get a domain",
    description="One domain of the account, or a shared one.",
    responses=s.error_responses(404),
)
async def get_domain(domain_id: DomainId, owner: AccountPrincipal, ctx: Ctx) -> s.Domain:
    async with ctx.db.read() as conn:
        found = await domains.get_domain(conn, owner.account_id, domain_id)
    if found is None:
        raise not_found("domain")
    return _domain(found)


@router.delete(
    "/domains/{domain_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a domain",
    description="Deletes one of the account's domains. Its inboxes must be deleted first "
    "(409 while any remain); shared domains cannot be deleted (403).",
    responses=s.error_responses(404, 409),
)
async def delete_domain(domain_id: DomainId, owner: AccountPrincipal, ctx: Ctx) -> Response:
    async with ctx.db.write() as conn:
        visible = await domains.get_domain(conn, owner.account_id, domain_id)
        if visible is None:
            raise not_found("domain")
        if visible.account_id is None:
            raise ApiError(403, "forbidden", "the operator's domains cannot be deleted")
        try:
            await domains.delete_domain(conn, owner.account_id, domain_id)
        except domains.DomainInUse:
            raise ApiError(409, "conflict", "delete the domain's inboxes first") from None
    return Response(status_code=204)
