"""DMARC, RFC 7489: policy discovery, identifier alignment and the disposition to apply.

Implementation notes:

- The RFC5322.From domain must be exactly one domain (§6.6.1): several From fields, several
  domains or none give permerror, since the message cannot be evaluated.
- Policy discovery (§6.6.3): TXT at _dmarc.<From domain>; if that has no DMARC record, TXT at
  _dmarc.<Organizational Domain>. Only records whose first tag is v=DMARC1 count. More than one
  record at a name stops discovery (permerror, nothing applied). A DNS failure is temperror.
- The Organizational Domain (§3.2) is the registrable domain under the Public Suffix List shipped
  in the `publicsuffixlist` package (ICANN and private sections); a public suffix itself is its
  own Organizational Domain.
- Tags (§6.3): an invalid p (or sp) makes the record act as p=none when rua has a valid URI, and
  otherwise discards it (permerror); other invalid values fall back to their defaults; unknown
  tags are ignored.
- Alignment (§3.1): strict is equality, relaxed is the same Organizational Domain. SPF counts
  only with result pass, for the domain SPF checked (MAIL FROM, or HELO for a null path); DKIM
  counts for any passing signature's d=.
- Policy (§6.6.4): sp applies only when the record came from the Organizational Domain and the
  From domain is below it. pct samples the failing messages that get the policy; the others get
  the next less strict one (reject -> quarantine -> none). The random source is injectable.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from publicsuffixlist import PublicSuffixList

from mailboxkit.dns.dkimverify import DkimResult, DkimVerdict
from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver
from mailboxkit.dns.spf import SpfResult, SpfVerdict
from mailboxkit.store.rawheaders import header_section

__all__ = [
    "Alignment",
    "Disposition",
    "DmarcRecord",
    "DmarcResult",
    "DmarcSyntaxError",
    "DmarcVerdict",
    "check_dmarc",
    "default_public_suffix_list",
    "from_domain",
    "is_aligned",
    "organizational_domain",
    "parse_dmarc_record",
]


class DmarcVerdict(StrEnum):
    """DMARC results (RFC 7489 §11.2, RFC 8601 §2.7)."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Disposition(StrEnum):
    """Requested handling of failing mail (RFC 7489 §6.3 p=, sp=)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class Alignment(StrEnum):
    """adkim= / aspf= (RFC 7489 §6.3)."""

    RELAXED = "r"
    STRICT = "s"


LESS_STRICT = {
    Disposition.REJECT: Disposition.QUARANTINE,
    Disposition.QUARANTINE: Disposition.NONE,
    Disposition.NONE: Disposition.NONE,
}
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


class DmarcSyntaxError(ValueError):
    """Not a usable DMARC record."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed DMARC policy record (RFC 7489 §6.3), with defaults filled in."""

    policy: Disposition
    subdomain_policy: Disposition | None = None
    adkim: Alignment = Alignment.RELAXED
    aspf: Alignment = Alignment.RELAXED
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: DmarcVerdict
    disposition: Disposition  # what to do with the message, after sp and pct
    from_domain: str
    org_domain: str = ""
    policy_domain: str = ""  # where the record was found
    requested: Disposition | None = None  # p or sp, before pct
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False  # pct chose the less strict disposition
    record: DmarcRecord | None = field(default=None, compare=False)
    detail: str = ""


@functools.cache
def default_public_suffix_list() -> PublicSuffixList:
    """The list shipped in the package, parsed once (immutable reference data)."""
    return PublicSuffixList()


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a public suffix stands for itself."""
    domain = domain.rstrip(".").lower()
    found = (psl or default_public_suffix_list()).privatesuffix(domain)
    return str(found) if found else domain


def is_aligned(
    identifier: str, from_dom: str, mode: Alignment, psl: PublicSuffixList | None = None
) -> bool:
    """RFC 7489 §3.1.1, §3.1.2: strict is equality; relaxed compares Organizational Domains."""
    identifier, from_dom = identifier.rstrip(".").lower(), from_dom.rstrip(".").lower()
    if not identifier or not from_dom:
        return False
    if mode is Alignment.STRICT:
        return identifier == from_dom
    return organizational_domain(identifier, psl) == organizational_domain(from_dom, psl)


def from_domain(message: bytes) -> str | None:
    """RFC 7489 §6.6.1: the one domain of the RFC5322.From field, or None if not exactly one."""
    # RFC 6532 allows UTF-8 in header fields; anything undecodable cannot name a domain anyway.
    text = header_section(message).decode("utf-8", "replace") + "\r\n"
    headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    fields = headers.get_all("From") or []
    if len(fields) != 1:
        return None
    domains = set()
    for _, address in email.utils.getaddresses([str(fields[0])]):
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return None
        domains.add(domain.strip().rstrip(".").lower())
    if len(domains) != 1:
        return None
    domain = domains.pop()
    try:
        return domain.encode("idna").decode("ascii")  # compare A-labels
    except UnicodeError:
        return domain


def is_dmarc_record(text: str) -> bool:
    """RFC 7489 §6.6.3 step 3: the first tag must be v=DMARC1."""
    tag, _, value = text.split(";", 1)[0].partition("=")
    return tag.strip().lower() == "v" and value.strip() == "DMARC1"


def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse a DMARC TXT record (RFC 7489 §6.3, §6.4); `DmarcSyntaxError` if it is unusable."""
    if not is_dmarc_record(text):
        raise DmarcSyntaxError("first tag is not v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not eq:
            continue  # §6.3: syntax errors in the remainder are ignored
        tags.setdefault(name.strip().lower(), value.strip())
    rua = _uris(tags.get("rua", ""))
    policy = _disposition(tags.get("p"))
    subdomain_policy = _disposition(tags.get("sp"))
    if policy is None or ("sp" in tags and subdomain_policy is None):
        if not rua:  # §6.6.3 step 6
            raise DmarcSyntaxError("missing or invalid p= (or sp=) and no valid rua=")
        policy, subdomain_policy = Disposition.NONE, None
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain_policy,
        adkim=_alignment(tags.get("adkim")),
        aspf=_alignment(tags.get("aspf")),
        pct=_integer(tags.get("pct"), 100, 0, 100),
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        fo=_fo(tags.get("fo")),
        rf=tuple(v.strip().lower() for v in tags.get("rf", "afrf").split(":") if v.strip()),
        ri=_integer(tags.get("ri"), 86400, 0, 2**32 - 1),
    )


def _disposition(value: str | None) -> Disposition | None:
    try:
        return Disposition(value.lower()) if value is not None else None
    except ValueError:
        return None


def _alignment(value: str | None) -> Alignment:
    try:
        return Alignment((value or "r").lower())
    except ValueError:
        return Alignment.RELAXED


def _integer(value: str | None, default: int, low: int, high: int) -> int:
    if value is None or not value.isdigit() or not low <= int(value) <= high:
        return default
    return int(value)


def _uris(value: str) -> tuple[str, ...]:
    """dmarc-uri = URI [ "!" size ] (§6.4); only syntactically valid ones are kept."""
    uris = (uri.strip() for uri in value.split(","))
    return tuple(uri for uri in uris if _URI_SCHEME.fullmatch(uri))


def _fo(value: str | None) -> tuple[str, ...]:
    options = tuple(v.strip().lower() for v in (value or "0").split(":"))
    return options if options and all(o in ("0", "1", "d", "s") for o in options) else ("0",)


async def _records_at(resolver: Resolver, domain: str) -> list[str]:
    try:
        texts = await resolver.txt(f"_dmarc.{domain}")
    except DnsNotFound:
        return []
    return [text for text in texts if is_dmarc_record(text)]


async def check_dmarc(
    from_dom: str | None,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    resolver: Resolver,
    *,
    psl: PublicSuffixList | None = None,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    """Evaluate DMARC for a message whose RFC5322.From domain is `from_dom` (RFC 7489 §6.6).

    `sample()` returns a float in [0, 1): the message gets the policy when sample() * 100 < pct.
    """
    if not from_dom:
        return DmarcResult(
            DmarcVerdict.PERMERROR, Disposition.NONE, "", detail="no single RFC5322.From domain"
        )
    from_dom = from_dom.rstrip(".").lower()
    org = organizational_domain(from_dom, psl)
    base = DmarcResult(DmarcVerdict.NONE, Disposition.NONE, from_dom, org)
    policy_domain = from_dom
    try:
        records = await _records_at(resolver, from_dom)
        if not records and org != from_dom:
            policy_domain = org
            records = await _records_at(resolver, org)
    except DnsTempError as exc:
        return replace(base, result=DmarcVerdict.TEMPERROR, detail=str(exc))
    if not records:
        return replace(base, detail="no DMARC record")
    if len(records) > 1:
        return replace(
            base,
            result=DmarcVerdict.PERMERROR,
            policy_domain=policy_domain,
            detail=f"{len(records)} DMARC records at _dmarc.{policy_domain}",
        )
    try:
        record = parse_dmarc_record(records[0])
    except DmarcSyntaxError as exc:
        return replace(
            base, result=DmarcVerdict.PERMERROR, policy_domain=policy_domain, detail=str(exc)
        )

    spf_aligned = (
        spf is not None
        and spf.result is SpfVerdict.PASS
        and is_aligned(spf.domain, from_dom, record.aspf, psl)
    )
    dkim_aligned = any(
        sig.result is DkimVerdict.PASS and is_aligned(sig.domain, from_dom, record.adkim, psl)
        for sig in dkim
    )
    requested = record.policy
    if policy_domain != from_dom and record.subdomain_policy is not None:
        requested = record.subdomain_policy  # §6.3 sp=
    evaluated = replace(
        base,
        policy_domain=policy_domain,
        requested=requested,
        record=record,
        spf_aligned=spf_aligned,
        dkim_aligned=dkim_aligned,
    )
    if spf_aligned or dkim_aligned:
        return replace(evaluated, result=DmarcVerdict.PASS, detail="aligned pass")
    disposition, sampled_out = requested, False
    if requested is not Disposition.NONE and not sample() * 100 < record.pct:
        disposition, sampled_out = LESS_STRICT[requested], True  # §6.6.4
    return replace(
        evaluated,
        result=DmarcVerdict.FAIL,
        disposition=disposition,
        sampled_out=sampled_out,
        detail="no aligned SPF or DKIM pass",
    )
