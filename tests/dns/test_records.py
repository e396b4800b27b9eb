"""Records to publish, their zone-file form, the MTA-STS policy and the autoconfig file."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.config import Settings
from mailboxkit.dns.records import (
    DnsRecord,
    DomainProfile,
    MtaStsMode,
    OutboundTransport,
    PublishedKey,
    RecordPurpose,
    RecordType,
    ServicePorts,
    autoconfig_xml,
    domain_records,
    mta_sts_id,
    mta_sts_policy,
    normalize_domain,
    operator_notes,
    records_table,
    txt_strings,
    zone_fragment,
)

RSA_TXT = "v=DKIM1; k=rsa; p=" + "M" * 392  # the length of a 2048-bit key record
ED_TXT = "v=DKIM1; k=ed25519; p=" + "E" * 44
PROFILE = DomainProfile(
    domain="example.com",
    hostname="mail.example.com",
    dkim=(PublishedKey("mbk20260101e", ED_TXT), PublishedKey("mbk20260101r", RSA_TXT)),
)
STS_ID = mta_sts_id(mta_sts_policy(PROFILE))


def test_every_record_of_a_domain_in_order() -> None:
    got = [(r.name, r.type, r.value, r.ttl, r.required) for r in domain_records(PROFILE)]
    assert got == [
        ("example.com", "MX", "10 mail.example.com.", 3600, True),
        ("example.com", "TXT", "v=spf1 mx -all", 3600, True),
        ("mbk20260101e._domainkey.example.com", "TXT", ED_TXT, 3600, True),
        ("mbk20260101r._domainkey.example.com", "TXT", RSA_TXT, 3600, True),
        (
            "_dmarc.example.com",
            "TXT",
            "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com",
            3600,
            True,
        ),
        ("_mta-sts.example.com", "TXT", f"v=STSv1; id={STS_ID}", 3600, False),
        ("mta-sts.example.com", "CNAME", "mail.example.com.", 3600, False),
        (
            "_smtp._tls.example.com",
            "TXT",
            "v=TLSRPTv1; rua=mailto:tls-reports@example.com",
            3600,
            False,
        ),
        ("_submissions._tcp.example.com", "SRV", "0 1 465 mail.example.com.", 3600, False),
        ("_submission._tcp.example.com", "SRV", "10 1 587 mail.example.com.", 3600, False),
        ("_imaps._tcp.example.com", "SRV", "0 1 993 mail.example.com.", 3600, False),
        ("_imap._tcp.example.com", "SRV", "10 1 143 mail.example.com.", 3600, False),
        ("autoconfig.example.com", "CNAME", "mail.example.com.", 3600, False),
    ]


def _values(profile: DomainProfile, purpose: RecordPurpose) -> list[tuple[str, str]]:
    return [(r.name, r.value) for r in domain_records(profile) if r.purpose is purpose]


@pytest.mark.parametrize(
    ("changes", "purpose", "expected"),
    [
        ({"transport": OutboundTransport.MX}, RecordPurpose.SPF, "v=spf1 mx -all"),
        ({"transport": OutboundTransport.SMARTHOST}, RecordPurpose.SPF, "v=spf1 mx -all"),
        (
            {"transport": OutboundTransport.SES},
            RecordPurpose.SPF,
            "v=spf1 mx include:amazonses.com -all",
        ),
        (
            {"dmarc_rua": "reports@example.com"},
            RecordPurpose.DMARC,
            "v=DMARC1; p=quarantine; rua=mailto:reports@example.com",
        ),
        (
            {"tlsrpt_rua": "tls@example.net"},
            RecordPurpose.TLS_RPT,
            "v=TLSRPTv1; rua=mailto:tls@example.net",
        ),
    ],
)
def test_values_follow_the_settings(
    changes: dict[str, object], purpose: RecordPurpose, expected: str
) -> None:
    profile = replace(PROFILE, **changes)  # type: ignore[arg-type]
    assert [value for _, value in _values(profile, purpose)] == [expected]


def test_ses_custom_mail_from_domain_gets_mx_and_spf() -> None:
    profile = replace(
        PROFILE,
        transport=OutboundTransport.SES,
        ses_mail_from="bounce.example.com",
        ses_region="eu-west-1",
    )
    assert _values(profile, RecordPurpose.MAIL_FROM_MX) == [
        ("bounce.example.com", "10 feedback-smtp.eu-west-1.amazonses.com.")
    ]
    assert _values(profile, RecordPurpose.MAIL_FROM_SPF) == [
        ("bounce.example.com", "v=spf1 include:amazonses.com -all")
    ]
    mail_from = [r for r in domain_records(profile) if r.name == "bounce.example.com"]
    assert all(r.required for r in mail_from)


@pytest.mark.parametrize(
    ("rua", "expected"),
    [
        ("", []),
        ("dmarc@reports.example.com", []),  # same organizational domain
        (
            "dmarc@example.net",
            [("example.com._report._dmarc.example.net", "v=DMARC1")],
        ),  # RFC 7489 §7.1
    ],
)
def test_external_report_address_needs_authorization(
    rua: str, expected: list[tuple[str, str]]
) -> None:
    profile = replace(PROFILE, dmarc_rua=rua)
    assert _values(profile, RecordPurpose.DMARC_REPORT) == expected


def test_services_turned_off_are_not_advertised() -> None:
    profile = replace(PROFILE, ports=ServicePorts(imaps=993, imap=0, submissions=0, submission=587))
    assert [name for name, _ in _values(profile, RecordPurpose.SERVICE)] == [
        "_submission._tcp.example.com",
        "_imaps._tcp.example.com",
    ]


def test_profile_from_settings() -> None:
    settings = Settings(
        hostname="MX.Example.COM.",
        outbound_transport="ses",
        ses_mail_from_subdomain="Bounce",
        ses_region="eu-west-1",
        dmarc_rua="mailto:agg@example.com",
        mta_sts_mode="enforce",
        imaps_port=993,
        dns_record_ttl=300,
    )
    profile = DomainProfile.from_settings(settings, "Example.ORG.", [PublishedKey("s", "v")])
    assert profile.domain == "example.org"
    assert profile.hostname == "mx.example.com"
    assert profile.transport is OutboundTransport.SES
    assert profile.ses_mail_from == "bounce.example.org"
    assert profile.dmarc_address == "agg@example.com"
    assert profile.tlsrpt_address == "tls-reports@example.org"
    assert profile.mta_sts_mode is MtaStsMode.ENFORCE
    assert profile.ports.imaps == 993
    assert {r.ttl for r in domain_records(profile)} == {300}


def test_custom_mail_from_only_with_ses() -> None:
    settings = Settings(outbound_transport="mx", ses_mail_from_subdomain="bounce")
    assert DomainProfile.from_settings(settings, "example.org").ses_mail_from == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("  mail.example.com ", "mail.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_normalize_domain(name: str, expected: str) -> None:
    assert normalize_domain(name) == expected


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64 + ".com", "a b.com", "me@example.com"])
def test_normalize_domain_refuses_what_is_not_a_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid domain name"):
        normalize_domain(name)


# TXT character-strings and zone files.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ['""']),
        ("v=spf1 mx -all", ['"v=spf1 mx -all"']),
        ("a" * 255, [f'"{"a" * 255}"']),
        ("a" * 256, [f'"{"a" * 255}"', '"a"']),
        ("a" * 510, [f'"{"a" * 255}"', f'"{"a" * 255}"']),
        ("a" * 511, [f'"{"a" * 255}"', f'"{"a" * 255}"', '"a"']),
        ('say "hi"', ['"say \\"hi\\""']),
        ("back\\slash", ['"back\\\\slash"']),
        ("tab\there", ['"tab\\009here"']),
        ("é", ['"\\195\\169"']),  # octets, RFC 1035 §5.1
        ("a" * 254 + "é", [f'"{"a" * 254}\\195"', '"\\169"']),  # split by octets
        ('"' * 256, ['"' + '\\"' * 255 + '"', '"\\""']),  # limit before escaping
    ],
)
def test_txt_strings(text: str, expected: list[str]) -> None:
    assert txt_strings(text) == expected


def _zone(fragment: str, origin: str = "example.com") -> dns.zone.Zone:
    head = f"$ORIGIN {origin}.\n@ 300 IN SOA ns.{origin}. hostmaster.{origin}. 1 1 1 1 1\n"
    head += f"@ 300 IN NS ns.{origin}.\n"
    return dns.zone.from_text(head + fragment, origin=origin, relativize=False)


@given(st.text(max_size=1200))
def test_any_txt_value_survives_the_zone_file(text: str) -> None:
    record = DnsRecord("t.example.com", RecordType.TXT, text, 60, RecordPurpose.SPF)
    zone = _zone(zone_fragment([record], "example.com"))
    rdataset = zone.find_rdataset("t.example.com.", dns.rdatatype.TXT)
    (rdata,) = list(rdataset)
    assert all(len(s) <= 255 for s in rdata.strings)
    assert b"".join(rdata.strings) == text.encode()


def test_zone_fragment_text() -> None:
    records = [
        DnsRecord("example.com", RecordType.MX, "10 mail.example.com.", 3600, RecordPurpose.MX),
        DnsRecord(
            "_dmarc.example.com", RecordType.TXT, "v=DMARC1; p=none", 300, RecordPurpose.DMARC
        ),
        DnsRecord("k._domainkey.example.com", RecordType.TXT, "x" * 600, 3600, RecordPurpose.DKIM),
        DnsRecord(
            "example.com._report._dmarc.example.net",
            RecordType.TXT,
            "v=DMARC1",
            3600,
            RecordPurpose.DMARC_REPORT,
            required=False,
            note="in the zone of example.net",
        ),
    ]
    head = "k._domainkey   3600 IN TXT   "
    pad = " " * (len(head) + 2)
    assert zone_fragment(records, "example.com", ["a note"]) == "\n".join(
        [
            "; MailboxKit records for example.com",
            "$ORIGIN example.com.",
            "; a note",
            "@              3600 IN MX    10 mail.example.com.",
            '_dmarc          300 IN TXT   "v=DMARC1; p=none"',
            f'{head}( "{"x" * 255}"',
            f'{pad}"{"x" * 255}"',
            f'{pad}"{"x" * 90}" )',
            "; in the zone of example.net:",
            ';   example.com._report._dmarc.example.net. 3600 IN TXT "v=DMARC1"',
            "",
        ]
    )


def test_whole_domain_zone_loads_with_every_value_intact() -> None:
    profile = replace(PROFILE, transport=OutboundTransport.SES, ses_mail_from="bounce.example.com")
    records = domain_records(profile)
    zone = _zone(zone_fragment(records, "example.com", operator_notes(profile)))
    for record in records:
        rdataset = zone.find_rdataset(f"{record.name}.", dns.rdatatype.from_text(record.type))
        assert rdataset.ttl == record.ttl
        texts = [
            b"".join(r.strings).decode() if record.type is RecordType.TXT else r.to_text()
            for r in rdataset
        ]
        assert texts == [record.value]


def test_records_table_groups_required_first() -> None:
    table = records_table(domain_records(PROFILE), ["publish PTR"])
    lines = table.splitlines()
    assert lines[0] == "; required"
    assert re.fullmatch(r"example\.com +3600 +MX +10 mail\.example\.com\.", lines[1])
    assert f"TXT    {RSA_TXT}" in lines[4]  # TXT values unquoted and whole
    assert "; recommended" in lines
    assert lines[-1] == "; publish PTR"


# MTA-STS and autoconfig.


def test_mta_sts_policy_text() -> None:
    assert mta_sts_policy(PROFILE) == (
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
    )


def test_mta_sts_id_changes_with_the_policy() -> None:
    ids = {
        mta_sts_id(mta_sts_policy(replace(PROFILE, **changes)))  # type: ignore[arg-type]
        for changes in (
            {},
            {"mta_sts_mode": MtaStsMode.ENFORCE},
            {"mta_sts_max_age": 86400},
            {"hostname": "mx2.example.com"},
        )
    }
    assert len(ids) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9]{1,32}", i) for i in ids)  # RFC 8461 §3.1
    assert mta_sts_id(mta_sts_policy(PROFILE)) == STS_ID  # stable


def test_autoconfig_xml() -> None:
    profile = replace(
        PROFILE, ports=ServicePorts(imaps=993, imap=0, submissions=465, submission=587)
    )
    root = ET.fromstring(autoconfig_xml(profile))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.com"
    assert provider.findtext("domain") == "example.com"
    servers = [
        (s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider
        if s.tag.endswith("Server")
    ]
    assert servers == [
        ("incomingServer", "imap", "mail.example.com", "993", "SSL"),
        ("outgoingServer", "smtp", "mail.example.com", "465", "SSL"),
        ("outgoingServer", "smtp", "mail.example.com", "587", "STARTTLS"),
    ]
    assert {s.findtext("username") for s in provider if s.tag.endswith("Server")} == {
        "%EMAILADDRESS%"
    }


def test_operator_notes_follow_the_transport() -> None:
    smarthost = replace(PROFILE, transport=OutboundTransport.SMARTHOST)
    assert any("relay" in n for n in operator_notes(smarthost))
    assert not any("relay" in n for n in operator_notes(PROFILE))
    assert any("PTR" in n for n in operator_notes(PROFILE))
