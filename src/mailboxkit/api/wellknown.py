"""Public routes on the HTTP server for mail senders and mail clients: the MTA-STS policy,
Thunderbird's autoconfig and Outlook's autodiscover. No authentication; not in the API document.

Implementation notes:

- Each answers only for a domain of this server (any account's or the operator's, verified or
  not: what it serves is public and follows from the settings), else 404. The local part of an
  address is never looked up, so nothing here tells whether a mailbox exists.
- The domain comes from the Host header (``mta-sts.DOMAIN``, ``autoconfig.DOMAIN``, ``DOMAIN``)
  or, for the client routes, from the address the client asks about. A TLS proxy in front must
  pass Host on and hold certificates for those names (RFC 8461 §3.3 wants a valid one for
  ``mta-sts.DOMAIN``).
- MTA-STS: ``GET /.well-known/mta-sts.txt`` on ``mta-sts.DOMAIN``, ``text/plain`` (RFC 8461
  §3.2), the text of ``dns.records.mta_sts_policy``, whose id the ``_mta-sts`` record carries.
- Autoconfig: Thunderbird asks ``https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=``
  and then ``https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml``; the XML is
  ``dns.records.autoconfig_xml``.
- Autodiscover: Outlook POSTs the "POX" request (an ``EMailAddress`` in XML) to
  ``/autodiscover/autodiscover.xml`` on ``autodiscover.DOMAIN`` or ``DOMAIN``. The address is
  taken with a pattern, not an XML parser (no entity expansion, no DTDs); the answer names this
  host's IMAP and submission ports, implicit TLS preferred (RFC 8314 §5.1).
"""

from __future__ import annotations

import re
from typing import Annotated
from xml.sax.saxutils import escape

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from mailboxkit.api.context import ApiContext, Ctx
from mailboxkit.api.errors import ApiError, not_found
from mailboxkit.dns.records import (
    DomainProfile,
    autoconfig_xml,
    mta_sts_policy,
    normalize_domain,
)
from mailboxkit.store import domains

router = APIRouter(include_in_schema=False)

XML = "application/xml"
MAX_ADDRESS = 320  # RFC 5321 §4.5.3.1: 64 octets of local part, @, 255 of domain
_EMAIL_ADDRESS = re.compile(rb"<(?:[\w.-]+:)?EMailAddress\s*>\s*([^<\s]{3,320})\s*</")
_AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
_OUTLOOK_RESPONSE = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)


def _host(request: Request) -> str:
    """The Host header's name: lower case, without port or final dot; "" when absent."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):  # an IPv6 literal is no domain of ours
        return ""
    return host.partition(":")[0].rstrip(".")


def _address_domain(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or len(address) > MAX_ADDRESS:
        raise ApiError(400, "bad_request", "not an email address")
    return domain


async def _profile(ctx: ApiContext, name: str) -> DomainProfile:
    """The profile of ``name`` if it is a domain of this server, else 404."""
    try:
        domain = normalize_domain(name)
    except ValueError:
        raise not_found("domain") from None
    async with ctx.db.read() as conn:
        served = await domains.is_served(conn, domain)
    if not served:
        raise not_found("domain")
    return ctx.profile(domain, ())


@router.get("/.well-known/mta-sts.txt")
async def mta_sts(request: Request, ctx: Ctx) -> Response:
    """The MTA-STS policy of DOMAIN, asked for at ``mta-sts.DOMAIN`` (RFC 8461 §3.2)."""
    host = _host(request)
    if not host.startswith("mta-sts."):
        raise not_found("policy")
    profile = await _profile(ctx, host.removeprefix("mta-sts."))
    return PlainTextResponse(mta_sts_policy(profile))


Address = Annotated[str | None, Query(max_length=MAX_ADDRESS)]


@router.get("/mail/config-v1.1.xml")
@router.get("/.well-known/autoconfig/mail/config-v1.1.xml")
async def autoconfig(request: Request, ctx: Ctx, emailaddress: Address = None) -> Response:
    """Thunderbird's autoconfig file for the address's domain, or the Host's."""
    if emailaddress:
        domain = _address_domain(emailaddress)
    else:
        domain = _host(request).removeprefix("autoconfig.")
    profile = await _profile(ctx, domain)
    return Response(autoconfig_xml(profile), media_type=XML)


@router.post("/autodiscover/autodiscover.xml")
async def autodiscover(request: Request, ctx: Ctx) -> Response:
    """Outlook's POX autodiscover: the IMAP and SMTP settings of the address in the request."""
    found = _EMAIL_ADDRESS.search(await request.body())
    if found is None:
        raise ApiError(400, "bad_request", "no EMailAddress in the request")
    address = found.group(1).decode("utf-8", "replace")
    profile = await _profile(ctx, _address_domain(address))
    return Response(autodiscover_xml(profile, address), media_type=XML)


def autodiscover_xml(profile: DomainProfile, address: str) -> str:
    """Outlook's autodiscover response (POX, outlook responseschema 2006a) for ``address``."""
    ports = profile.ports
    protocols = []
    for kind, implicit, starttls in (
        ("IMAP", ports.imaps, ports.imap),
        ("SMTP", ports.submissions, ports.submission),
    ):
        port, encryption = (implicit, "SSL") if implicit else (starttls, "TLS")
        if not port:
            continue
        lines = [
            "      <Protocol>",
            f"        <Type>{kind}</Type>",
            f"        <Server>{escape(profile.hostname)}</Server>",
            f"        <Port>{port}</Port>",
            "        <DomainRequired>off</DomainRequired>",
            f"        <LoginName>{escape(address)}</LoginName>",
            "        <SPA>off</SPA>",
            "        <SSL>on</SSL>",
            f"        <Encryption>{encryption}</Encryption>",
            "        <AuthRequired>on</AuthRequired>",
        ]
        if kind == "SMTP":
            lines += ["        <UsePOPAuth>off</UsePOPAuth>", "        <SMTPLast>off</SMTPLast>"]
        protocols += [*lines, "      </Protocol>"]
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            f'<Autodiscover xmlns="{_AUTODISCOVER_RESPONSE}">',
            f'  <Response xmlns="{_OUTLOOK_RESPONSE}">',
            "    <Account>",
            "      <AccountType>email</AccountType>",
            "      <Action>settings</Action>",
            *protocols,
            "    </Account>",
            "  </Response>",
            "</Autodiscover>",
            "",
        ]
    )
