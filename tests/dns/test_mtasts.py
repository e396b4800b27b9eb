"""MTA-STS (RFC 8461): the TXT record and policy parsers, MX matching, and the policy cache
fetching over real HTTPS (a local server with a trustme certificate) through a FakeResolver."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.dns.mtasts import (
    MAX_AGE_LIMIT,
    MtaStsPolicies,
    Policy,
    PolicyError,
    PolicyFetcher,
    PolicyUnavailable,
    Unavailability,
    mx_matches,
    parse_policy,
    parse_record,
)
from mailboxkit.dns.records import DomainProfile, MtaStsMode, mta_sts_id, mta_sts_policy
from mailboxkit.dns.resolver import FakeResolver
from mailserver.outbound.policyhost import PolicyHost, policy_text

from harness import free_port

# --- the policy file (§3.2) ---------------------------------------------------------------------


def test_a_valid_policy() -> None:
    text = (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.Example.com\r\nmx: *.backup.example.com\r\n"
        "max_age: 604800\r\n"
    )
    assert parse_policy(text, "abc") == Policy(
        MtaStsMode.ENFORCE, ("mx1.example.com", "*.backup.example.com"), 604800, "abc"
    )


def test_lf_lines_spaces_unknown_and_repeated_fields() -> None:
    text = (
        "version:STSv1\nmode: testing \nmode: enforce\nmx:\tmx.example.com\n"
        "x-vendor_note: kept out, ignored\nmax_age: 86400"
    )
    policy = parse_policy(text)
    assert policy.mode is MtaStsMode.TESTING  # the first of a repeated field counts
    assert policy.mx == ("mx.example.com",)
    assert policy.max_age == 86400


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mx == ()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("version: STSv2\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "version"),
        ("version: stsv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "version"),
        ("mode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "no version"),
        ("version: STSv1\nmode: Enforce\nmx: mx.example.com\nmax_age: 86400\n", "mode"),
        ("version: STSv1\nMode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "no mode"),
        ("version: STSv1\nmode: strict\nmx: mx.example.com\nmax_age: 86400\n", "mode"),
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\n", "no max_age"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 31557601\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: -1\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 1e5\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 00000000001\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 86400\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: mx_1.example.com\nmax_age: 86400\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com.\nmax_age: 86400\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: *\nmax_age: 86400\n", "mx"),
        ("version: STSv1\n\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "name: value"),
        ("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n\n", "name: value"),
        ("version STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n", "name: value"),
        ("<html>Not here</html>", "name: value"),
        ("", "name: value"),
    ],
)
def test_invalid_policies(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_policy(text)


@pytest.mark.parametrize("max_age", [0, 1, 86400, MAX_AGE_LIMIT])
def test_max_age_bounds(max_age: int) -> None:
    text = f"version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: {max_age}\n"
    assert parse_policy(text).max_age == max_age


@given(st.text(max_size=300))
def test_any_text_parses_or_is_a_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT


@given(
    st.sampled_from(list(MtaStsMode)),
    st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){1,3}", fullmatch=True),
    st.integers(86400, MAX_AGE_LIMIT),
)
def test_the_policy_we_publish_parses_back(mode: MtaStsMode, host: str, max_age: int) -> None:
    profile = DomainProfile("example.com", host, mta_sts_mode=mode, mta_sts_max_age=max_age)
    text = mta_sts_policy(profile)
    assert parse_policy(text, mta_sts_id(text)) == Policy(mode, (host,), max_age, mta_sts_id(text))


# --- MX matching (§4.1) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "MX1.Example.COM.", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("*.example.com", "mx1.example.org", False),
        ("*.example.com", ".example.com", False),
        ("mx.example.com", "MX.example.com", True),
        ("mx.example.com", "mx2.example.com", False),
        ("mx.example.com", "a.mx.example.com", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches
    assert Policy(MtaStsMode.ENFORCE, (pattern,), 60).matches(host) is matches


# --- the TXT record (§3.1) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=STSv1; id=20160831085700Z;", "20160831085700Z"),
        ("v=STSv1;id=abc", "abc"),
        ("v=STSv1 ;\tid=abc ; ext_1=some:thing", "abc"),
        ("v=STSv1; id=first; id=second", "first"),
        ("v=STSv1; id=" + "a" * 32, "a" * 32),
    ],
)
def test_valid_records(text: str, expected: str) -> None:
    assert parse_record(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "v=STSv1",
        "v=STSv1;",
        "v=STSv1; id=",
        "v=STSv1; id=a-b",
        "v=STSv1; id=" + "a" * 33,
        "v=STSv1; ext=1",
        "v=STSv1; id=abc;;",
        "v=STSv2; id=abc",
        "v=STSv1x; id=abc",
        "id=abc; v=STSv1",
        "v=STSv1; id=abc; bad value=1",
    ],
)
def test_invalid_records(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_record(text)


# --- discovery, fetching and caching (§3.3, §5.1) -----------------------------------------------

DOMAIN = "remote.test"
ENFORCE = policy_text("enforce", "mx.remote.test", max_age=600)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def host(ca: trustme.CA) -> Iterator[PolicyHost]:
    running = PolicyHost(ca, f"mta-sts.{DOMAIN}")
    running.serve(ENFORCE)
    running.start()
    yield running
    running.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(
        {
            f"_mta-sts.{DOMAIN}": {"TXT": ["v=STSv1; id=one"]},
            f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]},
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def policies(
    ca: trustme.CA, host: PolicyHost, resolver: FakeResolver, clock: Clock
) -> AsyncIterator[MtaStsPolicies]:
    client = httpx.AsyncClient(verify=_trusting(ca), follow_redirects=False, trust_env=False)
    fetcher = PolicyFetcher(resolver, client, port=host.port, timeout=10)
    yield MtaStsPolicies(resolver, fetcher, clock=clock)
    await fetcher.close()


def set_txt(resolver: FakeResolver, *texts: str) -> None:
    resolver.records[f"_mta-sts.{DOMAIN}"] = {"TXT": list(texts)}


async def test_a_policy_is_fetched_once_and_cached_by_id(
    policies: MtaStsPolicies, host: PolicyHost
) -> None:
    first = await policies.get(DOMAIN)
    again = await policies.get("Remote.Test.")
    assert first == Policy(MtaStsMode.ENFORCE, ("mx.remote.test",), 600, "one")
    assert again == first
    assert host.requests == [f"mta-sts.{DOMAIN}:{host.port}"]


async def test_a_new_id_fetches_the_new_policy(
    policies: MtaStsPolicies, host: PolicyHost, resolver: FakeResolver
) -> None:
    await policies.get(DOMAIN)
    host.serve(policy_text("testing", "*.remote.test"))
    assert (await policies.get(DOMAIN)).mode is MtaStsMode.ENFORCE
    set_txt(resolver, "v=STSv1; id=two")
    policy = await policies.get(DOMAIN)
    assert policy is not None and (policy.mode, policy.mx, policy.id) == (
        MtaStsMode.TESTING,
        ("*.remote.test",),
        "two",
    )
    assert host.fetches == 2


async def test_an_expired_policy_is_fetched_again(
    policies: MtaStsPolicies, host: PolicyHost, clock: Clock
) -> None:
    await policies.get(DOMAIN)
    clock.now += 599
    await policies.get(DOMAIN)
    assert host.fetches == 1
    clock.now += 2  # past max_age
    assert await policies.get(DOMAIN) is not None
    assert host.fetches == 2


async def test_a_failed_fetch_keeps_the_cached_policy_and_backs_off(
    policies: MtaStsPolicies, host: PolicyHost, resolver: FakeResolver, clock: Clock
) -> None:
    cached = await policies.get(DOMAIN)
    set_txt(resolver, "v=STSv1; id=two")
    host.status = 500
    assert await policies.get(DOMAIN) == cached
    assert await policies.get(DOMAIN) == cached
    assert host.fetches == 2  # the failure is not retried at once
    host.status = 200
    clock.now += 301
    assert (await policies.get(DOMAIN)).id == "two"


async def test_a_cached_policy_outlives_its_txt_record_and_dns_trouble(
    policies: MtaStsPolicies, resolver: FakeResolver, clock: Clock
) -> None:
    cached = await policies.get(DOMAIN)
    del resolver.records[f"_mta-sts.{DOMAIN}"]
    assert await policies.get(DOMAIN) == cached
    resolver.servfail.add(f"_mta-sts.{DOMAIN}")
    assert await policies.get(DOMAIN) == cached
    clock.now += 601
    assert await policies.get(DOMAIN) is None


@pytest.mark.parametrize(
    "txt",
    [
        [],
        ["v=spf1 -all"],
        ["v=STSv1; id=one", "v=STSv1; id=two"],  # RFC 8461 §3.1: more than one is none
        ["v=STSv1; id=not-valid"],
    ],
)
async def test_no_valid_record_no_policy(
    policies: MtaStsPolicies, host: PolicyHost, resolver: FakeResolver, txt: list[str]
) -> None:
    set_txt(resolver, *txt)
    assert await policies.get(DOMAIN) is None
    assert host.fetches == 0


@pytest.mark.parametrize(
    ("status", "content_type", "headers", "body"),
    [
        (404, "text/plain", {}, ENFORCE),
        (301, "text/plain", {"Location": "/moved"}, ENFORCE),
        (200, "text/html", {}, ENFORCE),
        (200, "text/plain", {}, ENFORCE + "x" * 70000),
        (200, "text/plain", {}, "version: STSv1\nmode: enforce\nmax_age: 600\n"),
    ],
    ids=["not-found", "redirect", "html", "too-large", "invalid"],
)
async def test_unusable_answers_are_no_policy(
    policies: MtaStsPolicies,
    host: PolicyHost,
    status: int,
    content_type: str,
    headers: dict[str, str],
    body: str,
) -> None:
    host.status, host.content_type, host.headers = status, content_type, headers
    host.also_at = "/moved"  # what a followed redirect would find
    host.serve(body)
    assert await policies.get(DOMAIN) is None
    assert host.fetches == 1  # no redirect followed


async def test_a_certificate_for_another_name_is_no_policy(
    ca: trustme.CA, resolver: FakeResolver
) -> None:
    impostor = PolicyHost(ca, "mta-sts.elsewhere.test")
    impostor.serve(ENFORCE)
    impostor.start()
    client = httpx.AsyncClient(verify=_trusting(ca), trust_env=False)
    fetcher = PolicyFetcher(resolver, client, port=impostor.port)
    try:
        assert await MtaStsPolicies(resolver, fetcher).get(DOMAIN) is None
        with pytest.raises(PolicyUnavailable) as refused:
            await fetcher.fetch(DOMAIN)
    finally:
        await fetcher.close()
        impostor.stop()
    assert refused.value.kind is Unavailability.INVALID
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert impostor.fetches == 0


async def test_an_untrusted_certificate_is_no_policy(
    host: PolicyHost, resolver: FakeResolver
) -> None:
    client = httpx.AsyncClient(verify=ssl.create_default_context(), trust_env=False)
    fetcher = PolicyFetcher(resolver, client, port=host.port)
    try:
        assert await MtaStsPolicies(resolver, fetcher).get(DOMAIN) is None
    finally:
        await fetcher.close()
    assert host.fetches == 0


@pytest.mark.parametrize(
    ("records", "status", "kind"),
    [
        ({}, 200, Unavailability.MISSING),  # mta-sts.remote.test does not exist
        ({f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]}}, 404, Unavailability.MISSING),
        ({f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]}}, 503, Unavailability.INVALID),
    ],
)
async def test_why_a_policy_is_unavailable(
    ca: trustme.CA,
    host: PolicyHost,
    records: dict[str, dict[str, list[str]]],
    status: int,
    kind: Unavailability,
) -> None:
    host.status = status
    resolver = FakeResolver(records)
    client = httpx.AsyncClient(verify=_trusting(ca), trust_env=False)
    fetcher = PolicyFetcher(resolver, client, port=host.port)
    try:
        with pytest.raises(PolicyUnavailable) as unavailable:
            await fetcher.fetch(DOMAIN)
    finally:
        await fetcher.close()
    assert unavailable.value.kind is kind


async def test_nothing_listening_is_missing_and_dns_trouble_temporary(ca: trustme.CA) -> None:
    resolver = FakeResolver(
        {f"mta-sts.{DOMAIN}": {"A": ["127.0.0.1"]}}, servfail=["mta-sts.x.test"]
    )
    client = httpx.AsyncClient(verify=_trusting(ca), trust_env=False)
    fetcher = PolicyFetcher(resolver, client, port=free_port())
    try:
        with pytest.raises(PolicyUnavailable) as refused:
            await fetcher.fetch(DOMAIN)
        with pytest.raises(PolicyUnavailable) as trouble:
            await fetcher.fetch("x.test")
    finally:
        await fetcher.close()
    assert refused.value.kind is Unavailability.MISSING
    assert trouble.value.kind is Unavailability.TEMPORARY


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
