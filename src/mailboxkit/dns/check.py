"""Live check of a domain's DNS against the records `dns.records` says it should publish.

Implementation notes:

- Every lookup goes through the resolver seam, so the same code runs against `FakeResolver` in
  unit tests, a real nsd in the end-to-end test and the Internet in production.
- Each record gets one status: ok; missing (NXDOMAIN, NODATA, or no record of its kind at the
  name); wrong (found, but it would not work: the found values are reported beside the expected
  one, with why); error (could not be decided: DNS failed for now, or what it depends on is
  absent). A domain passes when every required record is ok; recommended ones are reported but
  do not fail it.
- Meaning is compared, not text. SPF is evaluated with check_host() (`dns.spf`) for each
  address of this host when it delivers directly, and must include amazonses.com when SES
  sends; `+all` is wrong. DKIM compares k= and p=. DMARC must parse (`dns.dmarc`); a record
  inherited from the organizational domain counts (RFC 7489 §6.6.3). MTA-STS must carry the
  current policy's id. Host names (mta-sts, autoconfig) must resolve only to this host's
  addresses, through a CNAME or A records alike. SRV must name this host and port.
- Several SPF, DKIM, DMARC, MTA-STS or TLS-RPT records at one name are wrong, since readers then
  use none of them, or an arbitrary one (RFC 7208 §4.5, RFC 7489 §6.6.3, RFC 8461 §3.1,
  RFC 8460 §3).
- Given a policy fetcher, the MTA-STS policy file is fetched the way senders do (RFC 8461 §3.3,
  `dns.mtasts`: verified HTTPS at mta-sts.DOMAIN, no redirects, text/plain) and compared by
  meaning with the one this server serves: missing when nothing is served there, wrong when
  senders could not use it (certificate, status, syntax) or it differs, error on a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailboxkit.dns.dmarc import (
    Disposition,
    DmarcSyntaxError,
    is_dmarc_record,
    organizational_domain,
    parse_dmarc_record,
)
from mailboxkit.dns.mtasts import (
    Policy,
    PolicyFetcher,
    PolicyUnavailable,
    Unavailability,
    parse_policy,
    policy_url,
)
from mailboxkit.dns.records import (
    DnsRecord,
    DomainProfile,
    OutboundTransport,
    RecordPurpose,
    domain_records,
    mta_sts_policy,
)
from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver, normalize_name
from mailboxkit.dns.spf import check_spf
from mailboxkit.dns.spfrecord import SpfSyntaxError, SpfVerdict, is_spf_record, parse_record

__all__ = [
    "CheckStatus",
    "DomainCheck",
    "RecordCheck",
    "RecordResolver",
    "check_domain",
    "check_report",
]


class RecordResolver(Resolver, Protocol):
    """The resolver seam plus SRV, which only the record check needs."""

    async def srv(self, name: str) -> list[tuple[int, int, int, str]]:
        """(priority, weight, port, target) of each SRV record (RFC 2782)."""
        ...


class CheckStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RecordCheck:
    """One record as found in DNS, against what it should be."""

    purpose: RecordPurpose
    name: str
    type: str
    status: CheckStatus
    required: bool
    expected: str
    found: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DomainCheck:
    domain: str
    hostname: str
    checks: tuple[RecordCheck, ...]

    @property
    def ok(self) -> bool:
        """Whether every required record is right."""
        return all(c.status is CheckStatus.OK for c in self.checks if c.required)

    @property
    def problems(self) -> tuple[RecordCheck, ...]:
        return tuple(c for c in self.checks if c.status is not CheckStatus.OK)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: CheckStatus
    found: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Context:
    profile: DomainProfile
    resolver: RecordResolver
    host_addresses: tuple[str, ...] | None  # None: unknown (DNS failed)


_Checker = Callable[[_Context, DnsRecord], Awaitable[_Outcome]]


async def check_domain(
    profile: DomainProfile, resolver: RecordResolver, policies: PolicyFetcher | None = None
) -> DomainCheck:
    """Look up every record of `profile.domain` and say whether each is right; with
    `policies`, fetch the domain's MTA-STS policy too."""
    host_check, addresses = await _check_host(profile, resolver)
    context = _Context(profile, resolver, addresses)
    found = await asyncio.gather(*(_check(context, r) for r in domain_records(profile)))
    checks = [host_check]
    for check in found:
        checks.append(check)
        if check.purpose is RecordPurpose.SPF and not profile.dkim:
            checks.append(_no_dkim_key(profile.domain))
        if check.purpose is RecordPurpose.MTA_STS_HOST and policies is not None:
            checks.append(await _check_policy(profile, policies))
    if addresses:
        checks += await asyncio.gather(*(_check_ptr(context, ip) for ip in addresses))
    return DomainCheck(profile.domain, profile.hostname, tuple(checks))


def _no_dkim_key(domain: str) -> RecordCheck:
    return RecordCheck(
        RecordPurpose.DKIM,
        f"*._domainkey.{domain}",
        "TXT",
        CheckStatus.MISSING,
        required=True,
        expected="a DKIM key record",
        detail=f"no DKIM key yet: `mailboxkit dns records {domain}` makes one",
    )


async def _check(context: _Context, record: DnsRecord) -> RecordCheck:
    try:
        outcome = await _CHECKERS[record.purpose](context, record)
    except DnsTempError as exc:
        outcome = _Outcome(CheckStatus.ERROR, detail=f"DNS failed, try again: {exc}")
    return RecordCheck(
        record.purpose,
        record.name,
        str(record.type),
        outcome.status,
        record.required,
        record.value,
        outcome.found,
        outcome.detail,
    )


# Lookups: "does not exist" is an empty answer here; temporary failures propagate.


async def _txt(resolver: Resolver, name: str) -> list[str]:
    try:
        return await resolver.txt(name)
    except DnsNotFound:
        return []


async def _mx(resolver: Resolver, name: str) -> list[tuple[int, str]]:
    try:
        return await resolver.mx(name)
    except DnsNotFound:
        return []


async def _srv(resolver: RecordResolver, name: str) -> list[tuple[int, int, int, str]]:
    try:
        return await resolver.srv(name)
    except DnsNotFound:
        return []


async def _addresses(resolver: Resolver, name: str) -> tuple[str, ...]:
    found: list[str] = []
    for query in (resolver.a, resolver.aaaa):
        with contextlib.suppress(DnsNotFound):
            found += await query(name)
    return tuple(found)


def _tags(text: str) -> dict[str, str]:
    """A tag-list (RFC 6376 §3.2, RFC 8461 §3.1, RFC 8460 §3): the first of each tag wins."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _dotted(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


# The checks, one per purpose.


async def _check_host(
    profile: DomainProfile, resolver: RecordResolver
) -> tuple[RecordCheck, tuple[str, ...] | None]:
    """The MX target must have an address (RFC 5321 §5.1)."""

    def result(status: CheckStatus, found: tuple[str, ...] = (), detail: str = "") -> RecordCheck:
        expected = "this server's public addresses"
        host = profile.hostname
        return RecordCheck(
            RecordPurpose.MX_HOST, host, "A/AAAA", status, True, expected, found, detail
        )

    try:
        addresses = await _addresses(resolver, profile.hostname)
    except DnsTempError as exc:
        return result(CheckStatus.ERROR, detail=f"DNS failed, try again: {exc}"), None
    if not addresses:
        detail = "the MX target has no address, so no mail can reach it"
        return result(CheckStatus.MISSING, detail=detail), addresses
    return result(CheckStatus.OK, addresses), addresses


async def _check_ptr(context: _Context, ip: str) -> RecordCheck:
    """Forward-confirmed reverse DNS of this host: receivers distrust mail without it."""
    host = context.profile.hostname
    status, detail = CheckStatus.OK, ""
    found: tuple[str, ...] = ()
    try:
        found = tuple(await context.resolver.ptr(ip))
        if host not in {normalize_name(n) for n in found}:
            status, detail = CheckStatus.WRONG, f"the reverse DNS of {ip} does not name {host}"
    except DnsNotFound:
        status, detail = CheckStatus.MISSING, f"set the PTR of {ip} at the hosting provider"
    except DnsTempError as exc:
        status, detail = CheckStatus.ERROR, f"DNS failed, try again: {exc}"
    return RecordCheck(RecordPurpose.PTR, ip, "PTR", status, False, f"{host}.", found, detail)


_UNAVAILABLE = {
    Unavailability.MISSING: CheckStatus.MISSING,
    Unavailability.INVALID: CheckStatus.WRONG,
    Unavailability.TEMPORARY: CheckStatus.ERROR,
}


async def _check_policy(profile: DomainProfile, fetcher: PolicyFetcher) -> RecordCheck:
    """The MTA-STS policy file, fetched as senders do, against the one this server serves."""
    want = parse_policy(mta_sts_policy(profile))
    url = policy_url(profile.domain)

    def result(status: CheckStatus, found: tuple[str, ...] = (), detail: str = "") -> RecordCheck:
        return RecordCheck(
            RecordPurpose.MTA_STS_POLICY,
            url,
            "HTTPS",
            status,
            False,
            _policy_line(want),
            found,
            detail,
        )

    try:
        served = await fetcher.fetch(profile.domain)
    except PolicyUnavailable as why:
        return result(_UNAVAILABLE[why.kind], detail=str(why))
    differences = [
        f"{name} is {have}, not {expected}"
        for name, have, expected in (
            ("mode", served.mode, want.mode),
            ("mx", " ".join(sorted(served.mx)), " ".join(sorted(want.mx))),
            ("max_age", served.max_age, want.max_age),
        )
        if have != expected
    ]
    if differences:
        return result(CheckStatus.WRONG, (_policy_line(served),), "; ".join(differences))
    return result(CheckStatus.OK, (_policy_line(served),))


def _policy_line(policy: Policy) -> str:
    mx = "".join(f"mx: {m}; " for m in policy.mx)
    return f"version: STSv1; mode: {policy.mode}; {mx}max_age: {policy.max_age}"


async def _check_mx(context: _Context, record: DnsRecord) -> _Outcome:
    pairs = await _mx(context.resolver, record.name)
    found = tuple(f"{pref} {_dotted(host)}" for pref, host in sorted(pairs))
    if not pairs:
        return _Outcome(CheckStatus.MISSING)
    expected = normalize_name(record.value.split()[1])
    hosts = {normalize_name(host) for _, host in pairs}
    if hosts == {expected}:
        return _Outcome(CheckStatus.OK, found)
    if hosts == {"."}:
        return _Outcome(CheckStatus.WRONG, found, "a null MX (RFC 7505) refuses all mail")
    others = ", ".join(sorted(hosts - {expected}))
    if expected in hosts:
        return _Outcome(CheckStatus.WRONG, found, f"other hosts also receive this mail: {others}")
    return _Outcome(CheckStatus.WRONG, found, f"mail goes to {others}, not {expected}")


async def _check_spf(context: _Context, record: DnsRecord) -> _Outcome:
    found = tuple(t for t in await _txt(context.resolver, record.name) if is_spf_record(t))
    if not found:
        return _Outcome(CheckStatus.MISSING)
    if len(found) > 1:
        return _Outcome(CheckStatus.WRONG, found, "several SPF records: a permerror")
    try:
        parsed = parse_record(found[0])
    except SpfSyntaxError as exc:
        return _Outcome(CheckStatus.WRONG, found, f"syntax error: {exc}")
    if any(m.name == "all" and m.verdict is SpfVerdict.PASS for m in parsed.mechanisms):
        return _Outcome(CheckStatus.WRONG, found, "+all lets anyone send as the domain")
    includes = {
        "".join(t for t in m.domain_spec if isinstance(t, str)).lower()
        for m in parsed.mechanisms
        if m.name == "include" and m.domain_spec is not None
    }
    needed = [t for t in record.value.split() if t.startswith("include:")]
    absent = [t for t in needed if t.removeprefix("include:") not in includes]
    if absent:
        return _Outcome(CheckStatus.WRONG, found, f"lacks {' '.join(absent)}")
    profile = context.profile
    if record.purpose is not RecordPurpose.SPF or profile.transport is not OutboundTransport.MX:
        return _Outcome(CheckStatus.OK, found)
    if not context.host_addresses:
        return _Outcome(
            CheckStatus.ERROR, found, f"cannot evaluate: {profile.hostname} has no address"
        )
    failures = []
    for ip in context.host_addresses:
        result = await check_spf(
            ip, f"postmaster@{record.name}", profile.hostname, context.resolver
        )
        if result.result is SpfVerdict.TEMPERROR:
            return _Outcome(CheckStatus.ERROR, found, f"evaluating for {ip}: {result.detail}")
        if result.result is not SpfVerdict.PASS:
            failures.append(f"{ip}: {result.result}")
    if failures:
        why = f"does not authorize {profile.hostname} ({', '.join(failures)})"
        return _Outcome(CheckStatus.WRONG, found, why)
    return _Outcome(CheckStatus.OK, found)


async def _check_dkim(context: _Context, record: DnsRecord) -> _Outcome:
    found = tuple(await _txt(context.resolver, record.name))
    if not found:
        return _Outcome(CheckStatus.MISSING)
    if len(found) > 1:
        return _Outcome(CheckStatus.WRONG, found, "several records: verifiers pick one of them")
    tags, expected = _tags(found[0]), _tags(record.value)
    if tags.get("v", "DKIM1") != "DKIM1":
        return _Outcome(CheckStatus.WRONG, found, "v= must be DKIM1")
    if tags.get("k", "rsa").lower() != expected["k"]:
        return _Outcome(CheckStatus.WRONG, found, f"k= must be {expected['k']}")
    key = re.sub(r"\s+", "", tags.get("p", ""))
    if not key:
        return _Outcome(CheckStatus.WRONG, found, "p= is empty: the key is revoked")
    if key != expected["p"]:
        return _Outcome(CheckStatus.WRONG, found, "p= is not this server's public key")
    return _Outcome(CheckStatus.OK, found)


async def _check_dmarc(context: _Context, record: DnsRecord) -> _Outcome:
    found = tuple(t for t in await _txt(context.resolver, record.name) if is_dmarc_record(t))
    inherited = ""
    domain = context.profile.domain
    org = organizational_domain(domain)
    if not found and org != domain:
        at_org = await _txt(context.resolver, f"_dmarc.{org}")
        found = tuple(t for t in at_org if is_dmarc_record(t))
        inherited = f"inherited from _dmarc.{org}"
    if not found:
        return _Outcome(CheckStatus.MISSING)
    if len(found) > 1:
        return _Outcome(CheckStatus.WRONG, found, "several DMARC records: receivers ignore all")
    try:
        parsed = parse_dmarc_record(found[0])
    except DmarcSyntaxError as exc:
        return _Outcome(CheckStatus.WRONG, found, str(exc))
    notes = [inherited] if inherited else []
    if parsed.policy is Disposition.NONE:
        notes.append("p=none only monitors; quarantine or reject protects the domain")
    return _Outcome(CheckStatus.OK, found, "; ".join(notes))


async def _check_report_authorization(context: _Context, record: DnsRecord) -> _Outcome:
    found = tuple(t for t in await _txt(context.resolver, record.name) if is_dmarc_record(t))
    return _Outcome(CheckStatus.OK if found else CheckStatus.MISSING, found)


async def _check_tagged(context: _Context, record: DnsRecord, version: str) -> _Outcome:
    """MTA-STS or TLS-RPT: exactly one record whose first tag is v=`version`."""
    texts = await _txt(context.resolver, record.name)
    found = tuple(t for t in texts if next(iter(_tags(t).items()), None) == ("v", version))
    if not found:
        return _Outcome(CheckStatus.MISSING, tuple(texts))
    if len(found) > 1:
        return _Outcome(CheckStatus.WRONG, found, "several records: senders ignore all of them")
    return _Outcome(CheckStatus.OK, found)


async def _check_mta_sts(context: _Context, record: DnsRecord) -> _Outcome:
    outcome = await _check_tagged(context, record, "STSv1")
    if outcome.status is not CheckStatus.OK:
        return outcome
    have, want = _tags(outcome.found[0]).get("id", ""), _tags(record.value)["id"]
    if have != want:
        why = f"id={have} is not the current policy's; senders refetch only when the id changes"
        return _Outcome(CheckStatus.WRONG, outcome.found, why)
    return outcome


async def _check_tls_rpt(context: _Context, record: DnsRecord) -> _Outcome:
    outcome = await _check_tagged(context, record, "TLSRPTv1")
    if outcome.status is CheckStatus.OK and not _tags(outcome.found[0]).get("rua"):
        return _Outcome(CheckStatus.WRONG, outcome.found, "rua= is missing")
    return outcome


async def _check_alias(context: _Context, record: DnsRecord) -> _Outcome:
    found = await _addresses(context.resolver, record.name)
    if not found:
        return _Outcome(CheckStatus.MISSING)
    host = context.profile.hostname
    if not context.host_addresses:
        return _Outcome(CheckStatus.ERROR, found, f"cannot compare: {host} has no address")
    strangers = sorted(set(found) - set(context.host_addresses))
    if strangers:
        why = f"{', '.join(strangers)} is not an address of {host}"
        return _Outcome(CheckStatus.WRONG, found, why)
    return _Outcome(CheckStatus.OK, found)


async def _check_srv(context: _Context, record: DnsRecord) -> _Outcome:
    entries = await _srv(context.resolver, record.name)
    found = tuple(f"{p} {w} {port} {_dotted(t)}" for p, w, port, t in sorted(entries))
    if not entries:
        return _Outcome(CheckStatus.MISSING)
    _, _, port_text, target = record.value.split()
    port, host = int(port_text), normalize_name(target)
    if any(normalize_name(t) == host and p == port for _, _, p, t in entries):
        return _Outcome(CheckStatus.OK, found)
    return _Outcome(CheckStatus.WRONG, found, f"no entry names {host} port {port}")


_CHECKERS: dict[RecordPurpose, _Checker] = {
    RecordPurpose.MX: _check_mx,
    RecordPurpose.SPF: _check_spf,
    RecordPurpose.DKIM: _check_dkim,
    RecordPurpose.DMARC: _check_dmarc,
    RecordPurpose.DMARC_REPORT: _check_report_authorization,
    RecordPurpose.MAIL_FROM_MX: _check_mx,
    RecordPurpose.MAIL_FROM_SPF: _check_spf,
    RecordPurpose.MTA_STS: _check_mta_sts,
    RecordPurpose.MTA_STS_HOST: _check_alias,
    RecordPurpose.TLS_RPT: _check_tls_rpt,
    RecordPurpose.SERVICE: _check_srv,
    RecordPurpose.AUTOCONFIG: _check_alias,
}


def check_report(result: DomainCheck) -> str:
    """The result for a terminal: one line per record, found and expected for the others."""
    lines = [f"DNS check of {result.domain} (this server: {result.hostname})"]
    width = max((len(c.name) for c in result.checks), default=4)
    for check in result.checks:
        kind = "" if check.required else "  (recommended)"
        lines.append(f"{check.status:<8} {check.type:<6} {check.name:<{width}}{kind}".rstrip())
        if check.status is CheckStatus.OK:
            if check.detail:
                lines.append(f"{'':16}note:     {check.detail}")
            continue
        lines.append(f"{'':16}expected: {check.expected}")
        lines += [f"{'':16}found:    {value}" for value in check.found]
        if check.detail:
            lines.append(f"{'':16}why:      {check.detail}")
    required = sum(1 for c in result.problems if c.required)
    recommended = len(result.problems) - required
    if result.ok and not recommended:
        lines.append("All records are right.")
    else:
        lines.append(f"{required} required and {recommended} recommended record(s) need attention.")
    return "\n".join(lines) + "\n"
