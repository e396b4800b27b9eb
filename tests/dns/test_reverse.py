"""Forward-confirmed reverse DNS of a peer, against the resolver's fake."""

from __future__ import annotations

import pytest

from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.dns.reverse import confirmed_name

RECORDS = {
    "10.2.0.192.in-addr.arpa": {"PTR": ["mx.liar.test.", "mail.good.test."]},
    "mx.liar.test": {"A": ["198.51.100.7"]},  # claims the address but resolves elsewhere
    "mail.good.test": {"A": ["192.0.2.10"]},
    "20.2.0.192.in-addr.arpa": {"PTR": ["only.ptr.test."]},  # no forward record at all
    "30.2.0.192.in-addr.arpa": {"PTR": ["broken.test."]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": {
        "PTR": ["v6.good.test."]
    },
    "v6.good.test": {"AAAA": ["2001:db8::1"], "A": ["192.0.2.99"]},
}


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.10", "mail.good.test"),  # the second PTR name is the one that confirms
        ("192.0.2.20", None),  # a PTR alone proves nothing
        ("192.0.2.30", None),  # the forward lookup fails: no name, no error
        ("192.0.2.40", None),  # no PTR
        ("2001:db8::1", "v6.good.test"),  # IPv6 confirmed by AAAA
        ("not an address", None),
    ],
)
async def test_confirmed_name(ip: str, name: str | None) -> None:
    resolver = FakeResolver(RECORDS, servfail=["broken.test"])
    assert await confirmed_name(resolver, ip) == name
