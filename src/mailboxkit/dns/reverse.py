"""Forward-confirmed reverse DNS (FCrDNS) of a peer address, for the trace header.

The PTR names of the address are looked up, and a name counts only if it resolves back to the
same address (RFC 8601 §2.7.3 calls this check "iprev"); a PTR alone is whatever the owner of
the address block chose to write. DNS trouble means no name, never an error.
"""

from __future__ import annotations

import asyncio
import ipaddress

from mailboxkit.dns.resolver import DnsError, Resolver

__all__ = ["confirmed_name"]

MAX_NAMES = 10
"""PTR names tried at most (as SPF's ``ptr`` mechanism, RFC 7208 §5.5)."""


async def confirmed_name(resolver: Resolver, ip: str) -> str | None:
    """The first PTR name of ``ip`` whose A/AAAA records include ``ip``, or None."""
    try:
        address = ipaddress.ip_address(ip)
        names = await resolver.ptr(ip)
    except (ValueError, DnsError):
        return None
    forward = resolver.aaaa if address.version == 6 else resolver.a
    names = [n.rstrip(".").lower() for n in names[:MAX_NAMES]]
    found = await asyncio.gather(*(forward(n) for n in names), return_exceptions=True)
    for name, addresses in zip(names, found, strict=True):
        if isinstance(addresses, BaseException):
            if not isinstance(addresses, DnsError):
                raise addresses
            continue
        if any(_same(address, a) for a in addresses):
            return name
    return None


def _same(address: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:
        return False
