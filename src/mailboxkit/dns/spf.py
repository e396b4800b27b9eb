"""SPF evaluation, RFC 7208 check_host() (§4-§7) over the `Resolver` seam.

Implementation notes:

- <ip> is normalised first: an IPv4-mapped IPv6 address is an IPv4 address (§5, and it then
  matches ip4 and A records only).
- A null MAIL FROM checks the HELO identity with <sender> "postmaster@<helo>" (§2.4, §4.3); a
  sender without a local-part gets "postmaster" (§4.3). A malformed or single-label domain, or
  one without an SPF record, gives "none" (§4.3, §4.5); several SPF records give permerror.
- Limits are one budget for the whole evaluation, includes and redirects included (§4.6.4):
  at most `max_lookups` terms that query DNS (include, a, mx, ptr, exists, redirect; checked
  before the lookup), at most `max_void_lookups` of them answered NXDOMAIN or NODATA, at most
  10 MX names per mx (more is permerror) and 10 PTR names per ptr or %{p} (the rest ignored).
  exp= lookups are made only after the result is known and count toward neither limit.
- A DNS error stops evaluation with temperror (§5), except in ptr and %{p}, where it just fails
  to match / validate (§5.5, §7.3). The whole evaluation is bounded by `time_limit` (§4.6.4: at
  least 20 s), after which the result is temperror.
- An explanation (§6.2) is computed for "fail" only: from the exp= of the record that decided
  the result (a redirect target's, never an include target's); any problem with it falls back
  to the default explanation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver, is_queryable
from mailboxkit.dns.spfrecord import (
    Macro,
    MacroToken,
    Mechanism,
    SpfRecord,
    SpfSyntaxError,
    SpfVerdict,
    is_spf_record,
    parse_macro_string,
    parse_record,
)

__all__ = ["SpfIdentity", "SpfResult", "SpfVerdict", "check_spf", "expand_macro_string"]

log = logging.getLogger(__name__)

MAX_DNS_LOOKUPS = 10  # RFC 7208 §4.6.4
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4 (RECOMMENDED default)
MAX_MX_NAMES = 10  # RFC 7208 §4.6.4
MAX_PTR_NAMES = 10  # RFC 7208 §4.6.4
EVALUATION_TIMEOUT = 20.0  # RFC 7208 §4.6.4: SHOULD allow at least 20 seconds
DEFAULT_EXPLANATION = "{domain} does not designate {ip} as a permitted sender"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfIdentity(StrEnum):
    """Which SMTP identity was checked (RFC 7208 §2.3, §2.4)."""

    MAILFROM = "mailfrom"
    HELO = "helo"


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The outcome of check_host() for one identity."""

    result: SpfVerdict
    domain: str  # the domain check_host() started from
    identity: SpfIdentity
    sender: str  # <sender> as evaluated, e.g. "postmaster@helo.example"
    explanation: str = ""  # RFC 7208 §6.2, for "fail" only
    detail: str = ""  # why, for logs; not for SMTP replies


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(slots=True)
class _Evaluation:
    """State shared by the recursive check_host() calls of one SPF check."""

    resolver: Resolver
    ip: IPAddress
    sender: str
    helo: str
    receiver: str
    now: Callable[[], float]
    max_lookups: int
    max_void_lookups: int
    lookups: int = 0
    voids: int = 0
    validated_ptr: list[str] | None = None
    decided_by: tuple[tuple[MacroToken, ...] | None, str] = field(default=(None, ""))

    @property
    def local_part(self) -> str:
        return self.sender.rpartition("@")[0]

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]

    def count_lookup(self) -> None:
        """Before a term that queries DNS (RFC 7208 §4.6.4)."""
        self.lookups += 1
        if self.lookups > self.max_lookups:
            raise _PermError(f"more than {self.max_lookups} DNS-querying terms")

    def count_void(self) -> None:
        self.voids += 1
        if self.voids > self.max_void_lookups:
            raise _PermError(f"more than {self.max_void_lookups} void lookups")


async def check_spf(
    ip: str,
    mail_from: str,
    helo: str,
    resolver: Resolver,
    *,
    receiver: str = "unknown",
    now: Callable[[], float] = time.time,
    time_limit: float = EVALUATION_TIMEOUT,
    max_lookups: int = MAX_DNS_LOOKUPS,
    max_void_lookups: int = MAX_VOID_LOOKUPS,
) -> SpfResult:
    """Authorize `ip` to use the MAIL FROM identity, or the HELO one if MAIL FROM is null.

    `mail_from` is the reverse-path with or without angle brackets; `receiver` is the %{r}
    macro (this host's name). Raises ValueError only if `ip` is not an IP address.
    """
    address = ipaddress.ip_address(ip.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    helo = helo.strip()
    path = mail_from.strip().removeprefix("<").removesuffix(">").strip()
    identity = SpfIdentity.MAILFROM if path else SpfIdentity.HELO
    local, at, domain = path.rpartition("@") if path else ("", "@", helo)
    if not at:  # a bare domain
        local, domain = "", path
    domain = domain[:-1] if domain.endswith(".") else domain
    sender = f"{local or 'postmaster'}@{domain}"  # RFC 7208 §4.3
    state = _Evaluation(
        resolver, address, sender, helo, receiver, now, max_lookups, max_void_lookups
    )

    def result(verdict: SpfVerdict, detail: str, explanation: str = "") -> SpfResult:
        return SpfResult(verdict, domain.lower(), identity, sender, explanation, detail)

    if not _is_valid_domain(domain):
        return result(SpfVerdict.NONE, f"{domain!r} is not a valid domain name")
    try:
        async with asyncio.timeout(time_limit):
            verdict = await _check_host(state, domain)
            explanation = ""
            if verdict is SpfVerdict.FAIL:
                explanation = await _explain(state, domain)
    except _PermError as exc:
        return result(SpfVerdict.PERMERROR, str(exc))
    except _TempError as exc:
        return result(SpfVerdict.TEMPERROR, str(exc))
    except TimeoutError:
        return result(SpfVerdict.TEMPERROR, f"evaluation took over {time_limit}s")
    log.debug("spf domain=%s ip=%s result=%s", domain, address, verdict)
    if verdict is SpfVerdict.NONE:
        return result(verdict, f"{domain} publishes no SPF record")
    return result(verdict, f"{state.lookups} lookups, {state.voids} void", explanation)


def _is_valid_domain(domain: str) -> bool:
    """RFC 7208 §4.3: a queryable, multi-label name, not an address literal."""
    return is_queryable(domain) and "." in domain.strip(".") and not domain.startswith("[")


async def _fetch_record(state: _Evaluation, domain: str) -> SpfRecord | None:
    """RFC 7208 §4.4, §4.5: the one SPF record of `domain`, or None."""
    try:
        texts = await state.resolver.txt(domain)
    except DnsNotFound:
        return None
    except DnsTempError as exc:
        raise _TempError(f"TXT {domain}: {exc.reason}") from None
    records = [text for text in texts if is_spf_record(text)]
    if not records:
        return None
    if len(records) > 1:
        raise _PermError(f"{domain} has {len(records)} SPF records")
    try:
        return parse_record(records[0])
    except SpfSyntaxError as exc:
        raise _PermError(f"{domain}: {exc}") from None


async def _check_host(state: _Evaluation, domain: str) -> SpfVerdict:
    """check_host() for <domain> (RFC 7208 §4); errors raise `_PermError` / `_TempError`."""
    if not _is_valid_domain(domain):
        return SpfVerdict.NONE
    record = await _fetch_record(state, domain)
    if record is None:
        return SpfVerdict.NONE
    for mechanism in record.mechanisms:
        if await _matches(state, mechanism, domain):
            state.decided_by = (record.exp, domain)
            return mechanism.verdict
    if record.redirect is not None and not record.has_all:  # RFC 7208 §6.1
        state.count_lookup()
        target = await _expand_domain(state, record.redirect, domain)
        verdict = await _check_host(state, target)
        if verdict is SpfVerdict.NONE:
            raise _PermError(f"redirect target {target} has no SPF record")
        return verdict  # decided_by was set by the target
    state.decided_by = (record.exp, domain)
    return SpfVerdict.NEUTRAL  # RFC 7208 §4.7


async def _matches(state: _Evaluation, mechanism: Mechanism, domain: str) -> bool:
    name = mechanism.name
    if name == "all":  # RFC 7208 §5.1
        return True
    if name in ("ip4", "ip6"):  # §5.6
        return mechanism.network is not None and state.ip in mechanism.network
    state.count_lookup()
    target = domain
    if mechanism.domain_spec is not None:
        target = await _expand_domain(state, mechanism.domain_spec, domain)
    if name == "include":  # §5.2
        decided_by = state.decided_by
        verdict = await _check_host(state, target)
        state.decided_by = decided_by  # §6.2: the included record's exp= is not used
        if verdict is SpfVerdict.NONE:
            raise _PermError(f"include target {target} has no SPF record")
        return verdict is SpfVerdict.PASS
    if name == "a":  # §5.3
        return _in_any(state.ip, await _addresses(state, target, void=True), mechanism)
    if name == "mx":  # §5.4
        return await _matches_mx(state, target, mechanism)
    if name == "ptr":  # §5.5
        names = await _validated_names(state, count_void=True)
        return any(_is_subdomain(n, target) for n in names)
    return bool(await _lookup(state, "A", target, void=True))  # exists, §5.7: always A


async def _matches_mx(state: _Evaluation, target: str, mechanism: Mechanism) -> bool:
    try:
        exchanges = await state.resolver.mx(target)
    except DnsNotFound:
        state.count_void()
        return False
    except DnsTempError as exc:
        raise _TempError(f"MX {target}: {exc.reason}") from None
    if len(exchanges) > MAX_MX_NAMES:  # RFC 7208 §4.6.4: permerror
        raise _PermError(f"{target} has more than {MAX_MX_NAMES} MX records")
    for _, exchange in sorted(exchanges):
        if exchange in (".", ""):  # null MX, RFC 7505
            continue
        if _in_any(state.ip, await _addresses(state, exchange, void=False), mechanism):
            return True
    return False


def _in_any(ip: IPAddress, addresses: list[IPAddress], mechanism: Mechanism) -> bool:
    """RFC 7208 §5.3: compare under the mechanism's CIDR length for ip's family."""
    length = mechanism.cidr4 if ip.version == 4 else mechanism.cidr6
    for address in addresses:
        if address.version == ip.version:
            network = ipaddress.ip_network(f"{address}/{length}", strict=False)
            if ip in network:
                return True
    return False


async def _addresses(state: _Evaluation, name: str, *, void: bool) -> list[IPAddress]:
    """A records for an IPv4 <ip>, AAAA for IPv6 (RFC 7208 §5)."""
    rdtype = "A" if state.ip.version == 4 else "AAAA"
    found = []
    for text in await _lookup(state, rdtype, name, void=void):
        try:
            found.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    return found


async def _lookup(state: _Evaluation, rdtype: str, name: str, *, void: bool) -> list[str]:
    try:
        if rdtype == "A":
            return await state.resolver.a(name)
        return await state.resolver.aaaa(name)
    except DnsNotFound:
        if void:
            state.count_void()
        return []
    except DnsTempError as exc:
        raise _TempError(f"{rdtype} {name}: {exc.reason}") from None


async def _validated_names(state: _Evaluation, *, count_void: bool) -> list[str]:
    """RFC 7208 §5.5: PTR names of <ip> whose A/AAAA records lead back to <ip>.

    DNS errors here never fail the check: the PTR lookup failing means no names, an address
    lookup failing skips that name. Only the first 10 names are looked at (§4.6.4).
    """
    try:
        names = await state.resolver.ptr(str(state.ip))
    except DnsNotFound:
        if count_void:
            state.count_void()
        return []
    except DnsTempError:
        return []
    validated = []
    rdtype = "A" if state.ip.version == 4 else "AAAA"
    for name in names[:MAX_PTR_NAMES]:
        try:
            texts = await (state.resolver.a if rdtype == "A" else state.resolver.aaaa)(name)
        except (DnsNotFound, DnsTempError):
            continue
        if any(_same_address(text, state.ip) for text in texts):
            validated.append(name.rstrip("."))
    return validated


def _same_address(text: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def _is_subdomain(name: str, parent: str) -> bool:
    name, parent = name.rstrip(".").lower(), parent.rstrip(".").lower()
    return name == parent or name.endswith("." + parent)


async def _explain(state: _Evaluation, top_domain: str) -> str:
    """RFC 7208 §6.2: the explanation for a fail, or the default one."""
    default = DEFAULT_EXPLANATION.format(domain=top_domain, ip=state.ip)
    exp_spec, domain = state.decided_by
    if exp_spec is None:
        return default
    try:
        target = await _expand_domain(state, exp_spec, domain)
        texts = await state.resolver.txt(target)
        if len(texts) != 1:
            return default
        tokens = parse_macro_string(texts[0], exp_letters=True, allow_space=True)
        return await _expand(state, tokens, domain)
    except (DnsNotFound, DnsTempError, SpfSyntaxError, _PermError, _TempError):
        return default


async def _expand_domain(state: _Evaluation, spec: tuple[MacroToken, ...], domain: str) -> str:
    """Expand a domain-spec to a name to query (RFC 7208 §7.3, §4.8)."""
    name = await _expand(state, spec, domain)
    name = name[:-1] if name.endswith(".") else name
    while len(name) > 253 and "." in name:  # §7.3: drop labels from the left
        name = name.split(".", 1)[1]
    return name


async def expand_macro_string(
    text: str,
    *,
    ip: str,
    sender: str,
    domain: str,
    helo: str,
    resolver: Resolver,
    explanation: bool = False,
    receiver: str = "unknown",
    now: Callable[[], float] = time.time,
) -> str:
    """Expand one macro-string (RFC 7208 §7) outside check_host(), e.g. to test or explain.

    `explanation=True` parses it as explain-string text, where c, r, t and spaces are allowed.
    Raises `SpfSyntaxError` for bad macro syntax.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    state = _Evaluation(resolver, address, sender, helo, receiver, now, 0, 0)
    tokens = parse_macro_string(text, exp_letters=explanation, allow_space=explanation)
    return await _expand(state, tokens, domain)


async def _expand(state: _Evaluation, tokens: tuple[MacroToken, ...], domain: str) -> str:
    """RFC 7208 §7.3: substitute each macro with its transformed value."""
    out = []
    for token in tokens:
        if isinstance(token, str):
            out.append(token)
        else:
            out.append(token.transform(await _macro_value(state, token, domain)))
    return "".join(out)


async def _macro_value(state: _Evaluation, macro: Macro, domain: str) -> str:
    ip = state.ip
    letter = macro.letter
    if letter == "s":
        return state.sender
    if letter == "l":
        return state.local_part
    if letter == "o":
        return state.sender_domain
    if letter == "d":
        return domain
    if letter == "i":  # dotted quad, or 32 dot-separated nibbles for IPv6
        return str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
    if letter == "v":
        return "in-addr" if ip.version == 4 else "ip6"
    if letter == "h":
        return state.helo
    if letter == "c":  # RFC 5952 text form
        return str(ip)
    if letter == "r":
        return state.receiver
    if letter == "t":
        return str(int(state.now()))
    return await _validated_ptr_name(state, domain)  # "p"


async def _validated_ptr_name(state: _Evaluation, domain: str) -> str:
    """RFC 7208 §7.3 %{p}: <domain> if validated, else a subdomain of it, else any validated
    name, else "unknown". The PTR names are validated once per check."""
    if state.validated_ptr is None:
        state.validated_ptr = await _validated_names(state, count_void=False)
    names = state.validated_ptr
    exact = [n for n in names if n.lower() == domain.lower()]
    sub = [n for n in names if _is_subdomain(n, domain)]
    return (exact or sub or names or ["unknown"])[0]
