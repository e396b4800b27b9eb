"""The live DNS check against FakeResolver: right, missing and wrong records of each kind, and
the MTA-STS policy file fetched from a local HTTPS policy host."""

from __future__ import annotations

import copy
import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trustme

from mailboxkit.dns.check import (
    CheckStatus,
    DomainCheck,
    RecordCheck,
    check_domain,
    check_report,
)
from mailboxkit.dns.mtasts import PolicyFetcher
from mailboxkit.dns.records import (
    DomainProfile,
    OutboundTransport,
    PublishedKey,
    RecordPurpose,
    RecordType,
    domain_records,
    mta_sts_id,
    mta_sts_policy,
)
from mailboxkit.dns.resolver import FakeResolver, reverse_name
from mailserver.outbound.policyhost import PolicyHost, policy_text

from harness import free_port

HOST = "mail.example.com"
IP = "192.0.2.10"
RSA_TXT = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu"
ED_TXT = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
PROFILE = DomainProfile(
    domain="example.com",
    hostname=HOST,
    dkim=(PublishedKey("e1", ED_TXT), PublishedKey("r1", RSA_TXT)),
)
STS = f"v=STSv1; id={mta_sts_id(mta_sts_policy(PROFILE))}"

Zone = dict[str, dict[str, list[Any]]]


def right_zone(profile: DomainProfile = PROFILE) -> Zone:
    """What a domain publishing exactly `domain_records` looks like to a resolver."""
    zone: Zone = {
        profile.hostname: {"A": [IP]},
        reverse_name(IP): {"PTR": [profile.hostname]},
    }
    for record in domain_records(profile):
        rrs = zone.setdefault(record.name, {})
        if record.type is RecordType.MX:
            preference, exchange = record.value.split()
            rrs.setdefault("MX", []).append((int(preference), exchange.rstrip(".")))
        elif record.type is RecordType.CNAME:  # a resolver follows it to the host's addresses
            rrs["A"] = [IP]
        else:
            rrs.setdefault(str(record.type), []).append(record.value)
    return zone


async def run(zone: Zone, profile: DomainProfile = PROFILE, **fake: Any) -> DomainCheck:
    return await check_domain(profile, FakeResolver(zone, **fake))


def status_of(result: DomainCheck, purpose: RecordPurpose, name: str | None = None) -> CheckStatus:
    (check,) = [
        c for c in result.checks if c.purpose is purpose and (name is None or c.name == name)
    ]
    return check.status


async def test_a_right_domain_is_all_ok() -> None:
    result = await run(right_zone())
    assert [c for c in result.checks if c.status is not CheckStatus.OK] == []
    assert result.ok
    purposes = [c.purpose for c in result.checks]
    assert purposes[:3] == [RecordPurpose.MX_HOST, RecordPurpose.MX, RecordPurpose.SPF]
    assert purposes[-1] is RecordPurpose.PTR
    assert "All records are right." in check_report(result)


async def test_an_empty_domain_is_all_missing() -> None:
    zone = {HOST: {"A": [IP]}}
    result = await run(zone)
    assert not result.ok
    by_purpose = {(c.purpose, c.status) for c in result.checks}
    for purpose in (RecordPurpose.MX, RecordPurpose.SPF, RecordPurpose.DKIM, RecordPurpose.DMARC):
        assert (purpose, CheckStatus.MISSING) in by_purpose
    assert (RecordPurpose.PTR, CheckStatus.MISSING) in by_purpose
    report = check_report(result)
    assert "missing  MX     example.com" in report
    assert "expected: v=spf1 mx -all" in report


def _set(name: str, rtype: str, *values: Any) -> Callable[[Zone], None]:
    def change(zone: Zone) -> None:
        zone.setdefault(name, {})[rtype] = list(values)

    return change


def _drop(name: str, rtype: str | None = None) -> Callable[[Zone], None]:
    def change(zone: Zone) -> None:
        if rtype is None:
            zone.pop(name, None)
        else:
            zone.get(name, {}).pop(rtype, None)

    return change


D = "example.com"
P = RecordPurpose
RIGHT, MISSING, WRONG, ERROR = (
    CheckStatus.OK,
    CheckStatus.MISSING,
    CheckStatus.WRONG,
    CheckStatus.ERROR,
)

# pytest.param(change to the right zone, purpose, name or None, status, words in the detail)
CASES = [
    # MX
    pytest.param(_drop(D, "MX"), P.MX, None, MISSING, "", id="mx gone"),
    pytest.param(
        _set(D, "MX", (10, "mx.other.net")), P.MX, None, WRONG, "mx.other.net", id="mx elsewhere"
    ),
    pytest.param(
        _set(D, "MX", (10, HOST), (20, "old.mx.net")), P.MX, None, WRONG, "also", id="mx shared"
    ),
    pytest.param(_set(D, "MX", (0, ".")), P.MX, None, WRONG, "null MX", id="null mx"),
    pytest.param(
        _set(D, "MX", (50, "MAIL.example.com.")),
        P.MX,
        None,
        RIGHT,
        "",
        id="mx preference and case differ",
    ),
    # SPF
    pytest.param(_set(D, "TXT", "site-verification=1"), P.SPF, None, MISSING, "", id="spf gone"),
    pytest.param(
        _set(D, "TXT", "v=spf1 -all"),
        P.SPF,
        None,
        WRONG,
        "does not authorize",
        id="spf denies host",
    ),
    pytest.param(
        _set(D, "TXT", "v=spf1 mx -all", "v=spf1 a -all"),
        P.SPF,
        None,
        WRONG,
        "several",
        id="spf twice",
    ),
    pytest.param(_set(D, "TXT", "v=spf1 mx: -all"), P.SPF, None, WRONG, "syntax", id="spf syntax"),
    pytest.param(_set(D, "TXT", "v=spf1 mx +all"), P.SPF, None, WRONG, "+all", id="spf +all"),
    pytest.param(
        _set(D, "TXT", f"v=spf1 ip4:{IP} ~all"), P.SPF, None, RIGHT, "", id="spf by address"
    ),
    pytest.param(
        _set(D, "TXT", "x=y", "v=spf1 a:mail.example.com include:_spf.example.net -all"),
        P.SPF,
        None,
        RIGHT,
        "",
        id="spf among others",
    ),
    # DKIM
    pytest.param(
        _drop(f"r1._domainkey.{D}"), P.DKIM, f"r1._domainkey.{D}", MISSING, "", id="dkim gone"
    ),
    pytest.param(
        _set(f"r1._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p=AAAA"),
        P.DKIM,
        f"r1._domainkey.{D}",
        WRONG,
        "not this server's",
        id="dkim other key",
    ),
    pytest.param(
        _set(f"r1._domainkey.{D}", "TXT", "v=DKIM1; k=rsa; p="),
        P.DKIM,
        f"r1._domainkey.{D}",
        WRONG,
        "revoked",
        id="dkim revoked",
    ),
    pytest.param(
        _set(f"e1._domainkey.{D}", "TXT", ED_TXT.replace("ed25519", "rsa")),
        P.DKIM,
        f"e1._domainkey.{D}",
        WRONG,
        "k= must be ed25519",
        id="dkim wrong k",
    ),
    pytest.param(
        _set(f"e1._domainkey.{D}", "TXT", ED_TXT, ED_TXT),
        P.DKIM,
        f"e1._domainkey.{D}",
        WRONG,
        "several",
        id="dkim twice",
    ),
    pytest.param(
        _set(
            f"r1._domainkey.{D}", "TXT", "v=DKIM1;p=MIIBIjANBgkqhkiG9w0BAQEFAAOCA Q8AMIIBCgKCAQEAu"
        ),
        P.DKIM,
        f"r1._domainkey.{D}",
        RIGHT,
        "",
        id="dkim k= left out, spaces in p=",
    ),
    # DMARC
    pytest.param(_drop(f"_dmarc.{D}"), P.DMARC, None, MISSING, "", id="dmarc gone"),
    pytest.param(
        _set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=banana"),
        P.DMARC,
        None,
        WRONG,
        "p=",
        id="dmarc bad p",
    ),
    pytest.param(
        _set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=none", "v=DMARC1; p=reject"),
        P.DMARC,
        None,
        WRONG,
        "several",
        id="dmarc twice",
    ),
    pytest.param(
        _set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=none"),
        P.DMARC,
        None,
        RIGHT,
        "only monitors",
        id="dmarc monitoring",
    ),
    pytest.param(
        _set(f"_dmarc.{D}", "TXT", "v=DMARC1; p=reject; adkim=s"),
        P.DMARC,
        None,
        RIGHT,
        "",
        id="dmarc reject",
    ),
    # MTA-STS, TLS-RPT, SRV, aliases, reverse DNS: recommended
    pytest.param(
        _set(f"_mta-sts.{D}", "TXT", "v=STSv1; id=20240101"),
        P.MTA_STS,
        None,
        WRONG,
        "id=20240101",
        id="sts stale",
    ),
    pytest.param(
        _set(f"_mta-sts.{D}", "TXT", "id=1; v=STSv1"),
        P.MTA_STS,
        None,
        MISSING,
        "",
        id="sts not first tag",
    ),
    pytest.param(
        _set(f"_mta-sts.{D}", "TXT", STS, STS), P.MTA_STS, None, WRONG, "several", id="sts twice"
    ),
    pytest.param(
        _set(f"mta-sts.{D}", "A", "198.51.100.1"),
        P.MTA_STS_HOST,
        None,
        WRONG,
        "198.51.100.1",
        id="sts host elsewhere",
    ),
    pytest.param(_drop(f"mta-sts.{D}"), P.MTA_STS_HOST, None, MISSING, "", id="sts host gone"),
    pytest.param(
        _set(f"_smtp._tls.{D}", "TXT", "v=TLSRPTv1"),
        P.TLS_RPT,
        None,
        WRONG,
        "rua",
        id="tlsrpt without rua",
    ),
    pytest.param(
        _set(f"_smtp._tls.{D}", "TXT", "v=TLSRPTv1; rua=https://r.example.net/"),
        P.TLS_RPT,
        None,
        RIGHT,
        "",
        id="tlsrpt elsewhere",
    ),
    pytest.param(
        _set(f"_imaps._tcp.{D}", "SRV", f"0 1 143 {HOST}."),
        P.SERVICE,
        f"_imaps._tcp.{D}",
        WRONG,
        "port 993",
        id="srv wrong port",
    ),
    pytest.param(
        _drop(f"_submissions._tcp.{D}"),
        P.SERVICE,
        f"_submissions._tcp.{D}",
        MISSING,
        "",
        id="srv gone",
    ),
    pytest.param(
        _set(f"_imaps._tcp.{D}", "SRV", f"5 50 993 {HOST}.", "9 1 993 other.example.net."),
        P.SERVICE,
        f"_imaps._tcp.{D}",
        RIGHT,
        "",
        id="srv weights differ",
    ),
    pytest.param(_drop(f"autoconfig.{D}"), P.AUTOCONFIG, None, MISSING, "", id="autoconfig gone"),
    pytest.param(
        _set(reverse_name(IP), "PTR", "host.provider.net"),
        P.PTR,
        None,
        WRONG,
        "does not name",
        id="ptr elsewhere",
    ),
    pytest.param(_drop(reverse_name(IP)), P.PTR, None, MISSING, "PTR", id="ptr gone"),
]


@pytest.mark.parametrize(("change", "purpose", "name", "status", "words"), CASES)
async def test_one_record_changed(
    change: Callable[[Zone], None],
    purpose: RecordPurpose,
    name: str | None,
    status: CheckStatus,
    words: str,
) -> None:
    zone = right_zone()
    change(zone)
    result = await run(zone)
    (check,) = [
        c for c in result.checks if c.purpose is purpose and (name is None or c.name == name)
    ]
    assert check.status is status, check
    assert words in check.detail
    others = [c for c in result.checks if c is not check and c.status is not CheckStatus.OK]
    if purpose is P.MX:  # "v=spf1 mx -all" follows the MX, so SPF breaks with it
        others = [c for c in others if c.purpose is not P.SPF]
    assert others == []
    assert result.ok is (status is CheckStatus.OK or not check.required)
    if status is CheckStatus.WRONG:
        assert check.found, "a wrong record shows what was found"
        report = check_report(result)
        assert f"found:    {check.found[0]}" in report
        assert f"expected: {check.expected}" in report


async def test_dmarc_inherited_from_the_organizational_domain() -> None:
    profile = replace(PROFILE, domain="mail.example.com", hostname="mx.example.com")
    zone = right_zone(profile)
    zone.pop("_dmarc.mail.example.com")
    zone["_dmarc.example.com"] = {"TXT": ["v=DMARC1; p=reject"]}
    result = await run(zone, profile)
    assert status_of(result, RecordPurpose.DMARC) is CheckStatus.OK
    (dmarc,) = [c for c in result.checks if c.purpose is RecordPurpose.DMARC]
    assert "inherited from _dmarc.example.com" in dmarc.detail


async def test_host_without_address() -> None:
    zone = right_zone()
    zone.pop(HOST)
    result = await run(zone)
    assert status_of(result, RecordPurpose.MX_HOST) is CheckStatus.MISSING
    assert status_of(result, RecordPurpose.SPF) is CheckStatus.ERROR
    assert status_of(result, RecordPurpose.AUTOCONFIG) is CheckStatus.ERROR
    assert not result.ok


async def test_temporary_failures_are_errors_not_verdicts() -> None:
    result = await run(right_zone(), servfail=[f"_dmarc.{D}"], timeout=[f"_imaps._tcp.{D}"])
    assert status_of(result, RecordPurpose.DMARC) is CheckStatus.ERROR
    assert status_of(result, RecordPurpose.SERVICE, f"_imaps._tcp.{D}") is CheckStatus.ERROR
    assert not result.ok  # a required record could not be confirmed


async def test_host_lookup_failure() -> None:
    result = await run(right_zone(), servfail=[HOST])
    assert status_of(result, RecordPurpose.MX_HOST) is CheckStatus.ERROR
    assert not [c for c in result.checks if c.purpose is RecordPurpose.PTR]


async def test_no_dkim_key_yet() -> None:
    profile = replace(PROFILE, dkim=())
    result = await run(right_zone(profile), profile)
    assert status_of(result, RecordPurpose.DKIM) is CheckStatus.MISSING
    assert "mailboxkit dns records example.com" in check_report(result)
    assert not result.ok


async def test_ses_needs_its_include_and_its_mail_from_domain() -> None:
    profile = replace(
        PROFILE,
        transport=OutboundTransport.SES,
        ses_mail_from="bounce.example.com",
        ses_region="eu-west-1",
    )
    zone = right_zone(profile)
    assert (await run(zone, profile)).ok

    without_include = copy.deepcopy(zone)
    without_include[D]["TXT"] = ["v=spf1 mx -all"]
    result = await run(without_include, profile)
    assert status_of(result, RecordPurpose.SPF) is CheckStatus.WRONG
    assert not result.ok

    bounce_elsewhere = copy.deepcopy(zone)
    bounce_elsewhere["bounce.example.com"]["MX"] = [(10, "feedback-smtp.us-east-1.amazonses.com")]
    bounce_elsewhere["bounce.example.com"]["TXT"] = ["v=spf1 -all"]
    result = await run(bounce_elsewhere, profile)
    assert status_of(result, RecordPurpose.MAIL_FROM_MX) is CheckStatus.WRONG
    assert status_of(result, RecordPurpose.MAIL_FROM_SPF) is CheckStatus.WRONG
    assert not result.ok


async def test_smarthost_spf_is_not_evaluated_against_this_host() -> None:
    profile = replace(PROFILE, transport=OutboundTransport.SMARTHOST)
    zone = right_zone(profile)
    zone[D]["TXT"] = ["v=spf1 include:relay.example.net -all"]
    assert status_of(await run(zone, profile), RecordPurpose.SPF) is CheckStatus.OK


async def test_external_report_authorization_is_checked() -> None:
    profile = replace(PROFILE, dmarc_rua="agg@reports.example.net")
    zone = right_zone(profile)
    name = "example.com._report._dmarc.reports.example.net"
    assert status_of(await run(zone, profile), RecordPurpose.DMARC_REPORT) is CheckStatus.OK
    zone.pop(name)
    result = await run(zone, profile)
    assert status_of(result, RecordPurpose.DMARC_REPORT) is CheckStatus.MISSING
    assert result.ok  # recommended only


# --- the MTA-STS policy file, fetched over HTTPS from a local policy host ------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def policy_host(ca: trustme.CA) -> Iterator[PolicyHost]:
    running = PolicyHost(ca, "mta-sts.example.com")
    running.serve(mta_sts_policy(PROFILE))
    running.start()
    yield running
    running.stop()


async def check_policy(ca: trustme.CA, port: int, zone: Zone | None = None) -> RecordCheck:
    zone = zone or {**right_zone(), "mta-sts.example.com": {"A": ["127.0.0.1"]}}
    resolver = FakeResolver(zone)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    fetcher = PolicyFetcher(resolver, httpx.AsyncClient(verify=context), port=port)
    try:
        result = await check_domain(PROFILE, resolver, fetcher)
    finally:
        await fetcher.close()
    (check,) = [c for c in result.checks if c.purpose is RecordPurpose.MTA_STS_POLICY]
    assert not check.required
    return check


async def test_the_policy_served_is_this_servers(ca: trustme.CA, policy_host: PolicyHost) -> None:
    check = await check_policy(ca, policy_host.port)
    assert check.status is CheckStatus.OK
    assert check.name == "https://mta-sts.example.com/.well-known/mta-sts.txt"
    assert check.found == (f"version: STSv1; mode: testing; mx: {HOST}; max_age: 604800",)
    assert policy_host.requests == [f"mta-sts.example.com:{policy_host.port}"]


async def test_another_policy_is_wrong(ca: trustme.CA, policy_host: PolicyHost) -> None:
    policy_host.serve(policy_text("enforce", HOST, "mx2.example.com", max_age=604800))
    check = await check_policy(ca, policy_host.port)
    assert check.status is CheckStatus.WRONG
    assert check.expected == f"version: STSv1; mode: testing; mx: {HOST}; max_age: 604800"
    assert check.detail == f"mode is enforce, not testing; mx is {HOST} mx2.example.com, not {HOST}"


@pytest.mark.parametrize(
    ("status", "content_type", "expected"),
    [
        (404, "text/plain", CheckStatus.MISSING),
        (200, "text/html", CheckStatus.WRONG),
        (302, "text/plain", CheckStatus.WRONG),
    ],
)
async def test_a_policy_senders_cannot_use(
    ca: trustme.CA,
    policy_host: PolicyHost,
    status: int,
    content_type: str,
    expected: CheckStatus,
) -> None:
    policy_host.status, policy_host.content_type = status, content_type
    check = await check_policy(ca, policy_host.port)
    assert check.status is expected
    assert check.detail


async def test_no_policy_host_is_missing_and_no_fetcher_no_check(ca: trustme.CA) -> None:
    missing = await check_policy(ca, free_port(), {HOST: {"A": [IP]}})
    assert missing.status is CheckStatus.MISSING
    assert missing.detail == "mta-sts.example.com has no address"
    refused = await check_policy(ca, free_port())  # nothing listens there
    assert refused.status is CheckStatus.MISSING
    result = await run(right_zone())
    assert RecordPurpose.MTA_STS_POLICY not in {c.purpose for c in result.checks}
