"""DnsResolver against a real UDP DNS server on 127.0.0.1, and FakeResolver's contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailboxkit.dns.resolver import (
    DnsNotFound,
    DnsResolver,
    DnsTempError,
    FakeResolver,
    parse_nameserver,
    reverse_name,
)

SOA = "ns.test. hostmaster.test. 1 3600 600 86400 30"  # negative TTL: min(60, 30) = 30
ANSWERS = {
    ("txt.test", "TXT"): [("txt.test.", 300, "TXT", ['"v=spf1 " "-all"'])],
    ("multi.test", "TXT"): [("multi.test.", 60, "TXT", ['"one"', '"two" "parts"'])],
    ("alias.test", "TXT"): [
        ("alias.test.", 10, "CNAME", ["txt.test."]),
        ("txt.test.", 300, "TXT", ['"v=spf1 " "-all"']),
    ],
    ("mx.test", "MX"): [("mx.test.", 300, "MX", ["10 mail.test.", "20 backup.test."])],
    ("nullmx.test", "MX"): [("nullmx.test.", 300, "MX", ["0 ."])],
    ("host.test", "A"): [("host.test.", 300, "A", ["192.0.2.1", "192.0.2.2"])],
    ("host.test", "AAAA"): [("host.test.", 300, "AAAA", ["2001:db8::1"])],
    ("1.2.0.192.in-addr.arpa", "PTR"): [("1.2.0.192.in-addr.arpa.", 300, "PTR", ["host.test."])],
    ("slow.test", "TXT"): [("slow.test.", 300, "TXT", ['"finally"'])],
    ("a.test", "TXT"): [("a.test.", 300, "TXT", ['"a"'])],
    ("b.test", "TXT"): [("b.test.", 300, "TXT", ['"b"'])],
}
NODATA = {"host.test", "txt.test"}  # names that exist, for NODATA on other types
SERVFAIL = {"servfail.test"}
SILENT = {"silent.test"}
SLOW_SECONDS = 2.0


@dataclass
class DnsServer(asyncio.DatagramProtocol):
    """Answers from ANSWERS; NXDOMAIN (with SOA) for unknown names; can be slow or silent."""

    queries: list[tuple[str, str]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def count(self, name: str) -> int:
        return sum(1 for qname, _ in self.queries if qname == name)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in SILENT:
            return
        if name == "slow.test":  # answer later without blocking the server's loop
            task = asyncio.get_running_loop().create_task(self._answer_later(query, addr))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            return
        self._answer(query, addr)

    async def _answer_later(self, query: dns.message.Message, addr: tuple[str, int]) -> None:
        await asyncio.sleep(SLOW_SECONDS)
        self._answer(query, addr)

    def _answer(self, query: dns.message.Message, addr: tuple[str, int]) -> None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name in SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in ANSWERS:
            for owner, ttl, rrtype, values in ANSWERS[(name, rdtype)]:
                response.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", rrtype, values))
        else:
            if name not in NODATA:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text("test.", 60, "IN", "SOA", SOA))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        DnsServer, local_addr=("127.0.0.1", 0)
    )
    protocol.port = transport.get_extra_info("sockname")[1]
    yield protocol
    for task in list(protocol.pending):
        task.cancel()
    await asyncio.gather(*protocol.pending, return_exceptions=True)
    transport.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def resolver_for(
    server: DnsServer, clock: Clock, *, timeout: float = 5.0, cache_size: int = 100
) -> DnsResolver:
    return DnsResolver([f"127.0.0.1:{server.port}"], timeout, cache_size, clock=clock)


# ---- host[:port] -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        (" 127.0.0.1:53 ", ("127.0.0.1", 53)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize(
    "spec", ["dns.example", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:x", "[::1", "[::1]53", ""]
)
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


def test_empty_nameserver_list_is_an_error() -> None:
    with pytest.raises(ValueError):
        DnsResolver([], 1.0, 10)


# ---- answers ----------------------------------------------------------------------------------


async def test_txt_strings_are_joined(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    assert await resolver.txt("txt.test") == ["v=spf1 -all"]
    assert sorted(await resolver.txt("multi.test.")) == ["one", "twoparts"]


async def test_record_types(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    assert sorted(await resolver.mx("mx.test")) == [(10, "mail.test"), (20, "backup.test")]
    assert await resolver.mx("nullmx.test") == [(0, ".")]
    assert sorted(await resolver.a("host.test")) == ["192.0.2.1", "192.0.2.2"]
    assert await resolver.aaaa("host.test") == ["2001:db8::1"]
    assert await resolver.ptr("192.0.2.1") == ["host.test"]
    assert await resolver.txt("alias.test") == ["v=spf1 -all"]  # through the CNAME


async def test_nxdomain_and_nodata(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    with pytest.raises(DnsNotFound) as nx:
        await resolver.txt("missing.test")
    assert nx.value.nxdomain is True
    with pytest.raises(DnsNotFound) as nodata:
        await resolver.mx("host.test")
    assert nodata.value.nxdomain is False


async def test_servfail_is_temporary_and_not_cached(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    for _ in range(2):
        with pytest.raises(DnsTempError):
            await resolver.txt("servfail.test")
    assert server.count("servfail.test") == 2


async def test_timeout_is_temporary(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock, timeout=0.2)
    with pytest.raises(DnsTempError) as error:
        await resolver.txt("silent.test")
    assert error.value.reason == "timeout"


@pytest.mark.parametrize("name", ["a..test", "x" * 64 + ".test", ".".join(["abc"] * 70), ""])
async def test_unqueryable_names_are_nxdomain_without_a_query(
    server: DnsServer, clock: Clock, name: str
) -> None:
    resolver = resolver_for(server, clock)
    with pytest.raises(DnsNotFound) as nx:
        await resolver.txt(name)
    assert nx.value.nxdomain
    assert server.queries == []


# ---- caching ------------------------------------------------------------------------------------


async def test_positive_answers_cached_for_their_ttl(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    await resolver.txt("txt.test")
    clock.now += 299
    assert await resolver.txt("TXT.test.") == ["v=spf1 -all"]  # same key: case, final dot
    assert server.count("txt.test") == 1
    clock.now += 1
    await resolver.txt("txt.test")
    assert server.count("txt.test") == 2


async def test_cname_chain_uses_smallest_ttl(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    await resolver.txt("alias.test")
    clock.now += 9
    await resolver.txt("alias.test")
    assert server.count("alias.test") == 1
    clock.now += 1
    await resolver.txt("alias.test")
    assert server.count("alias.test") == 2


@pytest.mark.parametrize(("name", "nxdomain"), [("missing.test", True), ("host.test", False)])
async def test_negative_answers_cached_for_soa_minimum(
    server: DnsServer, clock: Clock, name: str, nxdomain: bool
) -> None:
    resolver = resolver_for(server, clock)
    for advance in (0, 29):
        clock.now += advance
        with pytest.raises(DnsNotFound) as error:
            await resolver.mx(name)
        assert error.value.nxdomain is nxdomain
    assert server.count(name) == 1
    clock.now += 1
    with pytest.raises(DnsNotFound):
        await resolver.mx(name)
    assert server.count(name) == 2


async def test_types_are_cached_separately(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock)
    await resolver.a("host.test")
    await resolver.aaaa("host.test")
    assert server.queries == [("host.test", "A"), ("host.test", "AAAA")]


async def test_lru_evicts_least_recently_used(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock, cache_size=2)
    await resolver.txt("a.test")
    await resolver.txt("b.test")
    await resolver.txt("a.test")  # a is now the most recent
    await resolver.txt("txt.test")  # evicts b
    await resolver.txt("a.test")
    await resolver.txt("b.test")
    assert (server.count("a.test"), server.count("b.test")) == (1, 2)


async def test_cache_size_zero_disables_caching(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock, cache_size=0)
    await resolver.txt("a.test")
    await resolver.txt("a.test")
    assert server.count("a.test") == 2


# ---- concurrency -------------------------------------------------------------------------------


async def test_slow_answer_does_not_block_other_queries(server: DnsServer, clock: Clock) -> None:
    resolver = resolver_for(server, clock, timeout=SLOW_SECONDS * 3)
    slow = asyncio.create_task(resolver.txt("slow.test"))
    fast = await resolver.txt("txt.test")  # completes while the slow answer is outstanding
    assert fast == ["v=spf1 -all"]
    assert not slow.done()
    assert server.count("slow.test") == 1
    assert await slow == ["finally"]


# ---- FakeResolver -------------------------------------------------------------------------------


async def test_fake_resolver_contract() -> None:
    fake = FakeResolver(
        {
            "Example.COM.": {"TXT": ["v=spf1 -all"], "MX": [(10, "mx.example.com")]},
            "mx.example.com": {"A": ["192.0.2.1"], "AAAA": []},
            reverse_name("192.0.2.1"): {"PTR": ["mx.example.com"]},
        },
        servfail=["bad.example.com"],
        timeout=["slow.example.com"],
    )
    assert await fake.txt("example.com") == ["v=spf1 -all"]
    assert await fake.mx("EXAMPLE.com.") == [(10, "mx.example.com")]
    assert await fake.a("mx.example.com") == ["192.0.2.1"]
    assert await fake.ptr("192.0.2.1") == ["mx.example.com"]
    with pytest.raises(DnsNotFound) as nodata:
        await fake.aaaa("mx.example.com")
    assert not nodata.value.nxdomain
    with pytest.raises(DnsNotFound) as nx:
        await fake.a("nowhere.example.com")
    assert nx.value.nxdomain
    with pytest.raises(DnsTempError) as servfail:
        await fake.txt("bad.example.com")
    assert servfail.value.reason == "servfail"
    with pytest.raises(DnsTempError) as timeout:
        await fake.txt("slow.example.com")
    assert timeout.value.reason == "timeout"
    assert fake.count == 8
    assert fake.queries[0] == ("example.com", "TXT")
    assert fake.queries[3] == ("1.2.0.192.in-addr.arpa", "PTR")


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.1") == "1.2.0.192.in-addr.arpa"
    assert reverse_name("2001:db8::1") == ".".join("1" + "0" * 23 + "8bd01002") + ".ip6.arpa"


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("macro%percent  space%20url-space.test", [b"macro%percent  space%20url-space", b"test"]),
        ("a\\b.test", [b"a\\b", b"test"]),  # no escape processing
        ("@.test", [b"@", b"test"]),  # no origin
        ("b\u00fccher.test", [b"xn--bcher-kva", b"test"]),  # IDNA
    ],
)
async def test_names_are_sent_literally(
    server: DnsServer, clock: Clock, name: str, labels: list[bytes]
) -> None:
    wire = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    seen: list[bytes] = []
    original = server.datagram_received

    def record(data: bytes, addr: tuple[str, int]) -> None:
        seen.append(data[12 : 12 + len(wire)])
        original(data, addr)

    server.datagram_received = record  # type: ignore[method-assign]
    with pytest.raises(DnsNotFound):
        await resolver_for(server, clock).txt(name)
    assert seen == [wire]
