"""The DNS seam: a small async resolver Protocol, its dnspython implementation and a fake.

Implementation notes:

- Names are compared case-insensitively and without a trailing dot (RFC 4343 §3). A name that
  cannot be queried (empty or over-long label, RFC 1035 §2.3.4) is reported as NXDOMAIN
  without touching the network, so callers see one behaviour for "does not exist".
- Two failure kinds, told apart because SPF, DKIM and DMARC must: `DnsNotFound` (NXDOMAIN,
  `nxdomain=True`, or NODATA, `nxdomain=False`; RFC 2308 §1) is an answer; `DnsTempError`
  (SERVFAIL, REFUSED, timeouts) is not, and is never cached.
- `DnsResolver` keeps its own LRU cache keyed by (name, type). Positive entries live for the
  smallest TTL in the answer (including CNAMEs); negative entries for the SOA-derived
  negative TTL (RFC 2308 §5), both measured with an injectable monotonic clock.
- Nothing here blocks the event loop: queries go through `dns.asyncresolver`.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = [
    "DnsError",
    "DnsNotFound",
    "DnsResolver",
    "DnsTempError",
    "FakeResolver",
    "Resolver",
    "normalize_name",
    "parse_nameserver",
    "reverse_name",
]

DEFAULT_DNS_PORT = 53
MAX_NAME_LENGTH = 253  # RFC 1035 §2.3.4, in presentation form without the final dot
MAX_LABEL_LENGTH = 63


class DnsError(Exception):
    """Base class of the resolver seam's errors."""


class DnsNotFound(DnsError):
    """The name does not exist (NXDOMAIN) or has no records of the type (NODATA)."""

    def __init__(self, name: str, rdtype: str, *, nxdomain: bool) -> None:
        kind = "NXDOMAIN" if nxdomain else "NODATA"
        super().__init__(f"{kind} {name} {rdtype}")
        self.name = name
        self.rdtype = rdtype
        self.nxdomain = nxdomain


class DnsTempError(DnsError):
    """The answer is unknown for now: SERVFAIL, REFUSED, timeout, unreachable servers."""

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"{reason} {name} {rdtype}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


class Resolver(Protocol):
    """What the mail code needs from DNS. Names are given without a trailing dot."""

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's character-strings joined (RFC 7208 §3.3), one item per record."""
        ...

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs; a null MX (RFC 7505) has exchange "."."""
        ...

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def ptr(self, ip: str) -> list[str]:
        """The names the reverse zone gives for `ip` (RFC 1035 §3.5, RFC 3596 §2.5)."""
        ...


def normalize_name(name: str) -> str:
    """Lower-cased, without the trailing dot."""
    return name.rstrip(".").lower() if name != "." else "."


def is_queryable(name: str) -> bool:
    """Whether `name` can be put on the wire (RFC 1035 §2.3.4: labels 1..63, name <= 253)."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare or len(bare) > MAX_NAME_LENGTH:
        return False
    return all(0 < len(label) <= MAX_LABEL_LENGTH for label in bare.split("."))


def reverse_name(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return normalize_name(dns.reversename.from_address(ip).to_text())


def parse_nameserver(spec: str) -> tuple[str, int]:
    """Split "host[:port]" into (address, port); IPv6 with a port is written "[addr]:port".

    >>> parse_nameserver("192.0.2.1:5353"), parse_nameserver("[2001:db8::1]:53")
    (('192.0.2.1', 5353), ('2001:db8::1', 53))
    """
    spec = spec.strip()
    host, port = spec, DEFAULT_DNS_PORT
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ValueError(f"unterminated '[' in nameserver {spec!r}")
        host, rest = spec[1:end], spec[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"junk after ']' in nameserver {spec!r}")
            port = _parse_port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _parse_port(port_text, spec)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver must be an IP address, not {spec!r}") from None
    return host, port


def _parse_port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in nameserver {spec!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    values: tuple[str, ...] | None  # None: a cached negative answer
    nxdomain: bool


class _TtlCache:
    """An LRU of DNS answers, each kept no longer than its TTL."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str], ttl: int, values: tuple[str, ...] | None, nx: bool) -> None:
        if self._size <= 0 or ttl <= 0:
            return
        self._entries[key] = _Entry(self._clock() + ttl, values, nx)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class DnsResolver:
    """`Resolver` on dnspython's asyncio stub resolver, with a TTL-honouring LRU cache.

    `nameservers=None` reads the system configuration (/etc/resolv.conf).
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        timeout: float = 5.0,
        cache_size: int = 4096,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers is None:
            self._resolver = dns.asyncresolver.Resolver(configure=True)
        else:
            if not nameservers:
                raise ValueError("nameservers must not be empty (use None for the system's)")
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(spec)) for spec in nameservers
            ]
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = None  # ours below honours the injectable clock
        self._cache = _TtlCache(cache_size, clock)

    async def txt(self, name: str) -> list[str]:
        return list(await self._query(name, "TXT"))

    async def mx(self, name: str) -> list[tuple[int, str]]:
        pairs = []
        for value in await self._query(name, "MX"):
            preference, exchange = value.split(" ", 1)
            pairs.append((int(preference), exchange))
        return pairs

    async def a(self, name: str) -> list[str]:
        return list(await self._query(name, "A"))

    async def aaaa(self, name: str) -> list[str]:
        return list(await self._query(name, "AAAA"))

    async def ptr(self, ip: str) -> list[str]:
        return list(await self._query(reverse_name(ip), "PTR"))

    async def srv(self, name: str) -> list[tuple[int, int, int, str]]:
        """(priority, weight, port, target) of each SRV record (RFC 2782)."""
        found = []
        for value in await self._query(name, "SRV"):
            priority, weight, port, target = value.split(" ", 3)
            found.append((int(priority), int(weight), int(port), target))
        return found

    async def _query(self, name: str, rdtype: str) -> tuple[str, ...]:
        key = (normalize_name(name), rdtype)
        if not is_queryable(name):
            raise DnsNotFound(key[0], rdtype, nxdomain=True)
        cached = self._cache.get(key)
        if cached is not None:
            if cached.values is None:
                raise DnsNotFound(key[0], rdtype, nxdomain=cached.nxdomain)
            return cached.values
        qname = _wire_name(key[0], rdtype)
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            ttl = _negative_ttl(exc, qname)
            self._cache.put(key, ttl, None, True)
            raise DnsNotFound(key[0], rdtype, nxdomain=True) from None
        except dns.resolver.LifetimeTimeout:
            raise DnsTempError(key[0], rdtype, "timeout") from None
        except dns.resolver.NoNameservers:
            raise DnsTempError(key[0], rdtype, "servfail") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(key[0], rdtype, type(exc).__name__) from None
        ttl = answer.chaining_result.minimum_ttl
        if answer.rrset is None or len(answer.rrset) == 0:
            self._cache.put(key, ttl, None, False)
            raise DnsNotFound(key[0], rdtype, nxdomain=False)
        values = tuple(_rdata_text(rdata) for rdata in answer.rrset)
        self._cache.put(key, ttl, values, False)
        return values


def _wire_name(name: str, rdtype: str) -> dns.name.Name:
    """The name as labels, taken literally: no "\\" escapes, no "@" origin (RFC 7208 §7.3
    expansions can contain any printable character). Non-ASCII names go through IDNA."""
    try:
        if name.isascii():
            return dns.name.Name([label.encode() for label in name.split(".")] + [b""])
        return dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError):
        raise DnsNotFound(name, rdtype, nxdomain=True) from None


def _negative_ttl(exc: dns.resolver.NXDOMAIN, qname: dns.name.Name) -> int:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM) from the NXDOMAIN response's authority."""
    try:
        response = exc.kwargs["responses"][qname]
        if isinstance(response, dns.message.QueryMessage):
            return int(response.resolve_chaining().minimum_ttl)
    except (KeyError, dns.exception.DNSException):
        pass
    return 0


def _rdata_text(rdata: object) -> str:
    """One record as the seam's string form."""
    strings = getattr(rdata, "strings", None)
    if strings is not None:  # TXT: RFC 7208 §3.3 / RFC 6376 §3.6.2.2 join the strings
        return b"".join(strings).decode("utf-8", "replace")
    exchange = getattr(rdata, "exchange", None)
    if isinstance(exchange, dns.name.Name):
        return f"{getattr(rdata, 'preference', 0)} {_name_text(exchange)}"
    target = getattr(rdata, "target", None)
    port = getattr(rdata, "port", None)
    if isinstance(target, dns.name.Name) and isinstance(port, int):  # SRV
        priority, weight = getattr(rdata, "priority", 0), getattr(rdata, "weight", 0)
        return f"{priority} {weight} {port} {_name_text(target)}"
    if isinstance(target, dns.name.Name):  # PTR
        return _name_text(target)
    address = getattr(rdata, "address", None)
    return str(address)


def _name_text(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True)


RecordSet = Mapping[str, Sequence[str | tuple[int, str]]]


class FakeResolver:
    """`Resolver` over a dict, for tests: {"example.com": {"TXT": [...], "MX": [(10, "mx")]}}.

    A name absent from `records` is NXDOMAIN; a present name without the type is NODATA.
    PTR records live under the reverse name ("4.3.2.1.in-addr.arpa"). Names in `servfail`
    or `timeout` raise `DnsTempError` for every type. `queries` records each lookup.
    """

    def __init__(
        self,
        records: Mapping[str, RecordSet] | None = None,
        *,
        servfail: Sequence[str] = (),
        timeout: Sequence[str] = (),
    ) -> None:
        self.records = {
            normalize_name(name): {rdtype.upper(): list(values) for rdtype, values in rrs.items()}
            for name, rrs in (records or {}).items()
        }
        self.servfail = {normalize_name(name) for name in servfail}
        self.timeout = {normalize_name(name) for name in timeout}
        self.queries: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return len(self.queries)

    async def txt(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "TXT")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        pairs = []
        for value in self._lookup(name, "MX"):
            preference, exchange = value if isinstance(value, tuple) else (0, value)
            pairs.append((int(preference), str(exchange)))
        return pairs

    async def a(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(value) for value in self._lookup(name, "AAAA")]

    async def ptr(self, ip: str) -> list[str]:
        return [str(value) for value in self._lookup(reverse_name(ip), "PTR")]

    async def srv(self, name: str) -> list[tuple[int, int, int, str]]:
        """SRV values are given as "priority weight port target" strings."""
        found = []
        for value in self._lookup(name, "SRV"):
            priority, weight, port, target = str(value).split()
            found.append((int(priority), int(weight), int(port), target.rstrip(".") or "."))
        return found

    def _lookup(self, name: str, rdtype: str) -> list[str | tuple[int, str]]:
        key = normalize_name(name)
        self.queries.append((key, rdtype))
        if key in self.timeout:
            raise DnsTempError(key, rdtype, "timeout")
        if key in self.servfail:
            raise DnsTempError(key, rdtype, "servfail")
        if not is_queryable(name) or key not in self.records:
            raise DnsNotFound(key, rdtype, nxdomain=True)
        values = self.records[key].get(rdtype)
        if not values:
            raise DnsNotFound(key, rdtype, nxdomain=False)
        return list(values)
