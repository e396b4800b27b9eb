"""Direct MX delivery and the smarthost transport against aiosmtpd sinks on loopback: routes
from a FakeResolver, STARTTLS (trustme certificates), AUTH, per-recipient replies, and MTA-STS
policies served over HTTPS by a local policy host."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trustme

from mailboxkit.dns.mtasts import MtaStsPolicies, PolicyFetcher
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.mailserver.outbound.mx import MxTransport
from mailboxkit.mailserver.outbound.smarthost import SmarthostTransport
from mailboxkit.mailserver.outbound.smtpclient import SmtpClientPool, TlsMode
from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    Parcel,
    PermanentFailure,
    TemporaryFailure,
)
from mailserver.outbound.policyhost import PolicyHost, policy_text
from mailserver.outbound.sink import Sink, SinkHandler

DATA = b"From: bot@example.test\r\nTo: a@remote.test\r\nSubject: Hi\r\n\r\nHello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sink.test", "mx.remote.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def sink(ca: trustme.CA) -> Iterator[Sink]:
    handler = SinkHandler(
        rcpt_reply=lambda a: "550 5.1.1 No such user" if a.startswith("nobody@") else None
    )
    running = Sink(handler, tls_context=server_context(ca))
    running.start()
    yield running
    running.stop()


def pool() -> SmtpClientPool:
    return SmtpClientPool(helo="mx.example.test", timeout=10)


def parcel(*recipients: str) -> Parcel:
    return Parcel("bot@example.test", recipients, DATA, "remote.test")


async def test_delivers_to_the_preferred_mx_over_starttls(sink: Sink) -> None:
    resolver = FakeResolver(
        {
            "remote.test": {"MX": [(20, "backup.remote.test"), (10, "mx.remote.test.")]},
            "mx.remote.test": {"A": ["127.0.0.1"]},
            "backup.remote.test": {"A": ["127.0.0.1"]},
        }
    )
    transport = MxTransport(resolver, pool(), port=sink.port)
    try:
        results = await transport.deliver(parcel("a@remote.test", "nobody@remote.test"))
    finally:
        await transport.close()
    assert isinstance(results["a@remote.test"], Accepted)
    assert results["a@remote.test"].remote == "mx.remote.test"
    assert results["nobody@remote.test"] == PermanentFailure(
        "550 5.1.1 No such user", "mx.remote.test"
    )
    got = sink.next()
    assert got.tls  # STARTTLS was offered, so it was used
    assert got.rcpt_tos == ("a@remote.test",)
    assert got.data == DATA
    assert ("backup.remote.test", "A") not in resolver.queries


async def test_the_next_mx_is_tried_when_one_does_not_answer(sink: Sink) -> None:
    resolver = FakeResolver(
        {
            "remote.test": {"MX": [(10, "dead.remote.test"), (20, "mx.remote.test")]},
            "dead.remote.test": {"A": ["127.0.0.2"]},  # nothing listens there
            "mx.remote.test": {"A": ["127.0.0.1"]},
        }
    )
    transport = MxTransport(resolver, pool(), port=sink.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
    assert isinstance(results["a@remote.test"], Accepted)
    assert sink.next().rcpt_tos == ("a@remote.test",)


async def test_a_domain_without_mx_records_is_its_own_mx(sink: Sink) -> None:
    resolver = FakeResolver({"remote.test": {"A": ["127.0.0.1"]}})
    transport = MxTransport(resolver, pool(), port=sink.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
    assert isinstance(results["a@remote.test"], Accepted)


@pytest.mark.parametrize(
    ("records", "servfail", "expected"),
    [
        ({"remote.test": {"MX": [(0, ".")]}}, [], PermanentFailure),  # RFC 7505 null MX
        ({}, [], PermanentFailure),  # NXDOMAIN
        ({}, ["remote.test"], TemporaryFailure),  # DNS trouble
        ({"remote.test": {"MX": [(10, "gone.remote.test")]}}, [], TemporaryFailure),
    ],
)
async def test_routes_that_cannot_work(
    records: dict[str, dict[str, list[object]]], servfail: list[str], expected: type
) -> None:
    transport = MxTransport(FakeResolver(records, servfail=servfail), pool(), port=9)  # type: ignore[arg-type]
    results = await transport.deliver(parcel("a@remote.test"))
    assert isinstance(results["a@remote.test"], expected)
    if records.get("remote.test", {}).get("MX") == [(0, ".")]:
        assert "5.1.10" in results["a@remote.test"].reply


async def test_a_temporary_data_reply_is_temporary_and_connections_are_reused(
    ca: trustme.CA,
) -> None:
    handler = SinkHandler(data_replies=["451 4.3.0 Try again later"])
    sink = Sink(handler)
    sink.start()
    resolver = FakeResolver(
        {"remote.test": {"MX": [(10, "mx.remote.test")]}, "mx.remote.test": {"A": ["127.0.0.1"]}}
    )
    transport = MxTransport(resolver, pool(), port=sink.port)
    try:
        first = await transport.deliver(parcel("a@remote.test"))
        second = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
        sink.stop()
    assert first["a@remote.test"] == TemporaryFailure("451 4.3.0 Try again later", "mx.remote.test")
    assert isinstance(second["a@remote.test"], Accepted)
    assert handler.attempts == 2
    assert resolver.queries.count(("mx.remote.test", "A")) == 2


async def test_smarthost_with_implicit_tls_and_auth(ca: trustme.CA) -> None:
    sink = Sink(
        tls_context=server_context(ca), implicit_tls=True, credentials=("relay-user", "s3cret")
    )
    sink.start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def relay(password: str) -> SmarthostTransport:
        return SmarthostTransport(
            SmtpClientPool(helo="mx.example.test", timeout=10, verified_context=client_context),
            host="127.0.0.1",
            port=sink.port,
            tls=TlsMode.IMPLICIT,
            username="relay-user",
            password=password,
        )

    good, bad = relay("s3cret"), relay("wrong")
    try:
        accepted = await good.deliver(parcel("a@remote.test", "b@elsewhere.test"))
        refused = await bad.deliver(parcel("a@remote.test"))
    finally:
        await good.close()
        await bad.close()
        sink.stop()
    assert isinstance(accepted["b@elsewhere.test"], Accepted)
    got = sink.next()
    assert (got.login, got.rcpt_tos) == ("relay-user", ("a@remote.test", "b@elsewhere.test"))
    assert isinstance(refused["a@remote.test"], TemporaryFailure)
    assert "535" in refused["a@remote.test"].reply


async def test_smarthost_refuses_an_unverified_certificate(ca: trustme.CA) -> None:
    sink = Sink(tls_context=server_context(ca))
    sink.start()
    relay = SmarthostTransport(pool(), host="127.0.0.1", port=sink.port, tls=TlsMode.STARTTLS)
    try:
        results = await relay.deliver(parcel("a@remote.test"))
    finally:
        await relay.close()
        sink.stop()
    assert isinstance(results["a@remote.test"], TemporaryFailure)
    assert sink.empty()


# --- MTA-STS (RFC 8461) -------------------------------------------------------------------------


@pytest.fixture
def policy_host(ca: trustme.CA) -> Iterator[PolicyHost]:
    running = PolicyHost(ca, "mta-sts.remote.test")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def fetcher(
    trusting: ssl.SSLContext, policy_host: PolicyHost
) -> AsyncIterator[PolicyFetcher]:
    """Fetches from ``policy_host`` (the resolver is the transport's, given per test)."""
    client = httpx.AsyncClient(verify=trusting, follow_redirects=False, trust_env=False)
    resolver = FakeResolver({"mta-sts.remote.test": {"A": ["127.0.0.1"]}})
    found = PolicyFetcher(resolver, client, port=policy_host.port)
    yield found
    await found.close()


def sts_transport(
    trusting: ssl.SSLContext, fetcher: PolicyFetcher, records: dict[str, Any], port: int
) -> MxTransport:
    """A transport to ``remote.test``, which publishes an MTA-STS record and policy."""
    resolver = FakeResolver({**records, "_mta-sts.remote.test": {"TXT": ["v=STSv1; id=1"]}})
    pool = SmtpClientPool(helo="mx.example.test", timeout=10, verified_context=trusting)
    return MxTransport(resolver, pool, port=port, policies=MtaStsPolicies(resolver, fetcher))


async def test_enforce_skips_mx_hosts_outside_the_policy(
    trusting: ssl.SSLContext, fetcher: PolicyFetcher, sink: Sink, policy_host: PolicyHost
) -> None:
    policy_host.serve(policy_text("enforce", "mx.remote.test"))
    records = {
        "remote.test": {"MX": [(10, "rogue.remote.test"), (20, "mx.remote.test")]},
        "rogue.remote.test": {"A": ["127.0.0.1"]},
        "mx.remote.test": {"A": ["127.0.0.1"]},
    }
    transport = sts_transport(trusting, fetcher, records, sink.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
    assert results["a@remote.test"] == Accepted("250 2.0.0 OK", "mx.remote.test")
    assert sink.next().tls


async def test_enforce_never_sends_in_the_clear(
    trusting: ssl.SSLContext, fetcher: PolicyFetcher, policy_host: PolicyHost
) -> None:
    policy_host.serve(policy_text("enforce", "mx.remote.test"))
    plain = Sink()  # no STARTTLS
    plain.start()
    records = {
        "remote.test": {"MX": [(10, "mx.remote.test")]},
        "mx.remote.test": {"A": ["127.0.0.1"]},
    }
    transport = sts_transport(trusting, fetcher, records, plain.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
        plain.stop()
    assert results["a@remote.test"] == TemporaryFailure(
        "451 4.7.4 mx.remote.test [127.0.0.1]: MTA-STS enforce: "
        "mx.remote.test does not offer STARTTLS"
    )
    assert plain.handler.attempts == 0 and plain.empty()


async def test_testing_delivers_in_the_clear_when_starttls_is_missing(
    trusting: ssl.SSLContext, fetcher: PolicyFetcher, policy_host: PolicyHost
) -> None:
    policy_host.serve(policy_text("testing", "mx.remote.test"))
    plain = Sink()
    plain.start()
    records = {
        "remote.test": {"MX": [(10, "mx.remote.test")]},
        "mx.remote.test": {"A": ["127.0.0.1"]},
    }
    transport = sts_transport(trusting, fetcher, records, plain.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
        plain.stop()
    assert isinstance(results["a@remote.test"], Accepted)
    assert not plain.next().tls


async def test_a_none_policy_is_opportunistic(
    trusting: ssl.SSLContext, fetcher: PolicyFetcher, sink: Sink, policy_host: PolicyHost
) -> None:
    policy_host.serve("version: STSv1\nmode: none\nmax_age: 86400\n")
    records = {
        "remote.test": {"MX": [(10, "elsewhere.test")]},  # matches nothing: no matter
        "elsewhere.test": {"A": ["127.0.0.1"]},
    }
    transport = sts_transport(trusting, fetcher, records, sink.port)
    try:
        results = await transport.deliver(parcel("a@remote.test"))
    finally:
        await transport.close()
    assert isinstance(results["a@remote.test"], Accepted)
    assert sink.next().tls
    assert policy_host.fetches == 1
