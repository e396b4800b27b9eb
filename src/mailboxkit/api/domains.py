"""``/domains``: the account's own domains, and the operator's shared ones (read-only), with
the DNS records each should publish and a live check of them.

Implementation notes:

- The records are those of ``mailboxkit dns records`` (``dns.records``, from the operator's
  settings through ``ApiContext.profile``), with the domain's DKIM keys, made on first use as
  the CLI makes them. A domain deleted meanwhile is not brought back (404).
- ``verify`` asks the live DNS through the application's resolver (``dns.check``); it does not
  change DNS. Its result is recorded as the periodic re-check's is (``dns.verification``): the
  first time every required record is right the domain is verified (``domain.verified``); a
  verified domain whose required record is missing or wrong is failing
  (``domain.verification_failed``) until a check finds it right again. ``verified_at`` stays
  set: it says the domain was once proven. The operator's shared domains are checked and
  marked alike, but have no account to tell.
- ``PATCH`` sets the catch-all inbox, which must be the account's; the operator's shared
  domains cannot be changed (403). The MX's recipient cache is told at once (``ApiContext``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from mailboxkit.api import schemas as s
from mailboxkit.api.auth import AccountPrincipal
from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.api.params import DomainId
from mailboxkit.dns import dkimkeys
from mailboxkit.dns.check import CheckStatus, check_domain
from mailboxkit.dns.records import (
    DomainProfile,
    RecordPurpose,
    RecordType,
    domain_records,
    operator_notes,
    zone_fragment,
)
from mailboxkit.dns.verification import record_result
from mailboxkit.store import domains
from mailboxkit.store.accounts import KeyOwner
from mailboxkit.store.inboxes import visible_inbox

log = logging.getLogger(__name__)

router = APIRouter(tags=["domains"], responses=s.AUTHENTICATED | s.error_responses(403))


def _domain(d: domains.Domain) -> s.Domain:
    return s.Domain(
        domain_id=d.id,
        domain=d.name,
        shared=d.account_id is None,
        verified=d.verified_at is not None,
        verified_at=d.verified_at,
        dns_status=d.dns_status.value,
        dns_checked_at=d.dns_checked_at,
        dns_failing_since=d.dns_failing_since,
        catch_all_inbox_id=d.catch_all_inbox_id,
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


@router.patch(
    "/domains/{domain_id}",
    response_model=s.Domain,
    summary="Update a domain",
    description="Sets or clears (`null`) the domain's catch-all inbox: mail for any address of "
    "the domain without an inbox (after `name+tag@` resolves to `name@`) goes there instead of "
    "being refused, and so does `postmaster@` when the domain has no such inbox. The inbox must "
    "be the account's (404 otherwise); shared domains cannot be changed (403).",
    responses=s.error_responses(404),
)
async def update_domain(
    domain_id: DomainId, body: s.DomainUpdate, owner: AccountPrincipal, ctx: Ctx
) -> s.Domain:
    async with ctx.db.write() as conn:
        visible = await domains.get_domain(conn, owner.account_id, domain_id)
        if visible is None:
            raise not_found("domain")
        if visible.account_id is None:
            raise ApiError(403, "forbidden", "the operator's domains cannot be changed")
        if "catch_all_inbox_id" in body.model_fields_set:
            inbox_id = body.catch_all_inbox_id
            if inbox_id is not None and not await visible_inbox(conn, owner.scope, inbox_id):
                raise not_found("inbox")
            await domains.set_catch_all(conn, owner.account_id, domain_id, inbox_id)
        changed = await domains.get_domain(conn, owner.account_id, domain_id)
    assert changed is not None
    ctx.routing_changed()
    log.info(
        "event=domain_updated domain_id=%s catch_all=%s", domain_id, changed.catch_all_inbox_id
    )
    return _domain(changed)


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


# DNS records and their check.

_EXAMPLE_HOST = "mail.example.com"
_EXAMPLE_RECORD = {
    "name": "agents.example.com",
    "type": "MX",
    "value": f"10 {_EXAMPLE_HOST}.",
    "ttl": 3600,
    "purpose": "mx",
    "required": True,
    "note": "",
}
_EXAMPLE_PROFILE = DomainProfile("agents.example.com", _EXAMPLE_HOST)
_EXAMPLE_ZONE = zone_fragment(
    domain_records(_EXAMPLE_PROFILE), _EXAMPLE_PROFILE.domain, operator_notes(_EXAMPLE_PROFILE)
)
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": s.Error, "description": "This server has no DNS resolver (`unavailable`)."}
}
_ZONE_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The zone-file fragment.",
        "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE_ZONE}},
    }
}
_EXAMPLE_CHECK = {
    "purpose": "spf",
    "name": "agents.example.com",
    "type": "TXT",
    "status": "wrong",
    "required": True,
    "expected": "v=spf1 mx -all",
    "found": ["v=spf1 include:_spf.example.net ~all"],
    "detail": f"does not authorize {_EXAMPLE_HOST} (203.0.113.7: softfail)",
}


def _examples(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class DnsRecord(BaseModel):
    model_config = _examples(_EXAMPLE_RECORD)
    name: str = Field(description="The absolute name, lower case, without the final dot.")
    type: RecordType
    value: str = Field(
        description="As entered at a DNS host: TXT values unquoted and whole, host names "
        "inside values ending with a dot."
    )
    ttl: int
    purpose: RecordPurpose
    required: bool = Field(description="Needed for mail to work; the others improve it.")
    note: str = Field(description="Where the record goes or what it serves, when not obvious.")


class DnsRecords(BaseModel):
    model_config = _examples(
        {
            "domain_id": s.DOMAIN_ID,
            "domain": "agents.example.com",
            "hostname": _EXAMPLE_HOST,
            "records": [_EXAMPLE_RECORD],
            "notes": [f"{_EXAMPLE_HOST} needs A/AAAA records with this server's addresses."],
        }
    )
    domain_id: str
    domain: str
    hostname: str = Field(description="This server's host name, the MX target.")
    records: list[DnsRecord] = Field(description="Required records first.")
    notes: list[str] = Field(description="What the records alone do not cover.")


class RecordCheck(BaseModel):
    model_config = _examples(_EXAMPLE_CHECK)
    purpose: RecordPurpose
    name: str
    type: str = Field(
        description="MX, TXT, CNAME, SRV; A/AAAA for this host, PTR for its addresses, "
        "HTTPS for the MTA-STS policy file."
    )
    status: CheckStatus = Field(
        description="ok; missing; wrong (found, but it would not work: see `found` and "
        "`detail`); error (DNS failed for now, try again)."
    )
    required: bool
    expected: str
    found: list[str] = Field(description="What the DNS holds there now.")
    detail: str = Field(description="Why the record is not ok, or a note on an ok one.")


class DomainVerification(BaseModel):
    model_config = _examples(
        {
            "domain_id": s.DOMAIN_ID,
            "domain": "agents.example.com",
            "hostname": _EXAMPLE_HOST,
            "ok": False,
            "verified": False,
            "verified_at": None,
            "dns_status": "unverified",
            "checks": [_EXAMPLE_CHECK],
        }
    )
    domain_id: str
    domain: str
    hostname: str
    ok: bool = Field(description="Every required record is right now.")
    verified: bool = Field(description="The required records have been right at least once.")
    verified_at: datetime | None
    dns_status: Literal["unverified", "verified", "failing"] = Field(
        description="The domain's state after this check: failing when it was verified and a "
        "required record is now missing or wrong (a check that only met DNS errors changes "
        "nothing)."
    )
    checks: list[RecordCheck]


async def _records_profile(
    ctx: ApiContext, owner: KeyOwner, domain_id: str
) -> tuple[domains.Domain, DomainProfile]:
    """The domain (404 unless visible to the account) and what its records are made from."""
    async with ctx.db.read() as conn:
        found = await domains.get_domain(conn, owner.account_id, domain_id)
    if found is None:
        raise not_found("domain")
    try:
        keys = await dkimkeys.ensure_keys(
            ctx.db, found.name, now=ctx.clock.now(), create_domain=False
        )
    except dkimkeys.UnknownDomain:
        raise not_found("domain") from None
    return found, ctx.profile(found.name, [k.published for k in keys])


@router.get(
    "/domains/{domain_id}/dns-records",
    response_model=DnsRecords,
    summary="DNS records to publish",
    description="Every record the domain should publish for this server, exactly as entered "
    "at a DNS host: MX, SPF, DKIM for each selector, DMARC (required), MTA-STS, TLS-RPT, SRV "
    "and autoconfig (recommended). The same as `mailboxkit dns records`; the domain's DKIM "
    "keys are made on first use.",
    responses=s.error_responses(404),
)
async def get_dns_records(domain_id: DomainId, owner: AccountPrincipal, ctx: Ctx) -> DnsRecords:
    found, profile = await _records_profile(ctx, owner, domain_id)
    return DnsRecords(
        domain_id=found.id,
        domain=found.name,
        hostname=profile.hostname,
        records=[
            DnsRecord.model_validate(r, from_attributes=True) for r in domain_records(profile)
        ],
        notes=list(operator_notes(profile)),
    )


@router.get(
    "/domains/{domain_id}/zone-file",
    response_class=Response,
    summary="DNS records as a zone file",
    description="The records of `dns-records` as a BIND zone-file fragment (RFC 1035 §5) for "
    "the domain's zone, long TXT values split into 255-byte strings; records in other zones "
    "and the notes are comments. The same as `mailboxkit dns records --zone`.",
    responses=_ZONE_FILE | s.error_responses(404),
)
async def get_zone_file(domain_id: DomainId, owner: AccountPrincipal, ctx: Ctx) -> Response:
    found, profile = await _records_profile(ctx, owner, domain_id)
    text = zone_fragment(domain_records(profile), found.name, operator_notes(profile))
    return PlainTextResponse(text)


@router.post(
    "/domains/{domain_id}/verify",
    response_model=DomainVerification,
    summary="Check the domain's DNS",
    description="Looks up each record of `dns-records` in the live DNS and reports it as ok, "
    "missing, wrong (with what was found beside what is expected, and why) or error (DNS "
    "failed; try again), plus this host's addresses and their reverse DNS. Meaning is compared, "
    "not text: SPF is evaluated for this host's addresses, DKIM by key. The first time every "
    "required record is right, the domain becomes verified and a `domain.verified` event is "
    "sent. When a required record of a verified domain is later missing or wrong, the domain "
    "is failing (`domain.verification_failed`) until a check finds it right again "
    "(`domain.verified`, with `recovered`). The periodic re-check does the same.",
    responses=s.error_responses(404) | _UNAVAILABLE,
)
async def verify_domain(
    domain_id: DomainId, owner: AccountPrincipal, ctx: Ctx
) -> DomainVerification:
    if ctx.resolver is None:
        raise ApiError(503, "unavailable", "DNS checks are not available on this server")
    found, profile = await _records_profile(ctx, owner, domain_id)
    result = await check_domain(profile, ctx.resolver, ctx.mta_sts)
    outcome = await record_result(ctx.db, found, result, now=ctx.clock.now())
    if ctx.bus is not None:
        ctx.bus.publish(outcome.events)
    return DomainVerification(
        domain_id=found.id,
        domain=found.name,
        hostname=result.hostname,
        ok=result.ok,
        verified=outcome.domain.verified_at is not None,
        verified_at=outcome.domain.verified_at,
        dns_status=outcome.domain.dns_status.value,
        checks=[RecordCheck.model_validate(c, from_attributes=True) for c in result.checks],
    )
