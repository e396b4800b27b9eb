"""RFC 7489: record parsing, Organizational Domains, alignment, policy, sp and pct."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.dns.dkimverify import DkimResult, DkimVerdict
from mailboxkit.dns.dmarc import (
    Alignment,
    Disposition,
    DmarcRecord,
    DmarcSyntaxError,
    DmarcVerdict,
    check_dmarc,
    from_domain,
    is_aligned,
    organizational_domain,
    parse_dmarc_record,
)
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.dns.spf import SpfIdentity, SpfResult, SpfVerdict

R, S = Alignment.RELAXED, Alignment.STRICT
NONE, QUARANTINE, REJECT = Disposition.NONE, Disposition.QUARANTINE, Disposition.REJECT

# ---- §6.3 / §6.4 record parsing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=DMARC1; p=reject", DmarcRecord(REJECT)),
        ("v=DMARC1;p=none;", DmarcRecord(NONE)),
        (" v = DMARC1 ;  p = Quarantine ; ", DmarcRecord(QUARANTINE)),
        (
            "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=s; pct=25; fo=1:d; ri=3600; rf=afrf;"
            " rua=mailto:agg@example.com!10m,mailto:other@example.net;"
            " ruf=mailto:forensic@example.com",
            DmarcRecord(
                REJECT,
                QUARANTINE,
                adkim=S,
                aspf=S,
                pct=25,
                rua=("mailto:agg@example.com!10m", "mailto:other@example.net"),
                ruf=("mailto:forensic@example.com",),
                fo=("1", "d"),
                ri=3600,
            ),
        ),
        ("v=DMARC1; p=reject; adkim=x; aspf=; pct=101; fo=2; ri=soon", DmarcRecord(REJECT)),
        ("v=DMARC1; p=reject; pct=-1", DmarcRecord(REJECT)),
        ("v=DMARC1; p=reject; pct=0", DmarcRecord(REJECT, pct=0)),
        ("v=DMARC1; p=reject; future=tag; junk", DmarcRecord(REJECT)),
        ("v=DMARC1; p=reject; p=none", DmarcRecord(REJECT)),  # first occurrence wins
        (
            "v=DMARC1; p=reject; rua=not a uri, mailto:a@example.com",
            DmarcRecord(REJECT, rua=("mailto:a@example.com",)),
        ),
        # §6.6.3 step 6: invalid p= (or sp=) with a valid rua= acts as p=none
        (
            "v=DMARC1; p=bogus; rua=mailto:a@example.com",
            DmarcRecord(NONE, rua=("mailto:a@example.com",)),
        ),
        ("v=DMARC1; rua=mailto:a@example.com", DmarcRecord(NONE, rua=("mailto:a@example.com",))),
        (
            "v=DMARC1; p=reject; sp=maybe; rua=mailto:a@example.com",
            DmarcRecord(NONE, rua=("mailto:a@example.com",)),
        ),
    ],
)
def test_parse(text: str, expected: DmarcRecord) -> None:
    assert parse_dmarc_record(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC1",  # no p=, no rua=
        "v=DMARC1; p=bogus",
        "v=DMARC1; p=reject; sp=maybe",
        "p=reject; v=DMARC1",  # v= must come first
        "v=dmarc1; p=reject",  # the version is case-sensitive (§6.4 ABNF uses %x)
        "v=DMARC2; p=reject",
        "v=spf1 -all",
        "",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DmarcSyntaxError):
        parse_dmarc_record(text)


@given(st.text())
def test_parse_raises_only_syntax_errors(text: str) -> None:
    for candidate in (text, "v=DMARC1;" + text):
        with contextlib.suppress(DmarcSyntaxError):
            parse_dmarc_record(candidate)


# ---- §3.2 Organizational Domain and §3.1 alignment -----------------------------------------


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("a.b.mail.example.com", "example.com"),
        ("Mail.Example.COM.", "example.com"),
        ("example.co.uk", "example.co.uk"),
        ("mail.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own
        ("com", "com"),
        ("x.y.city.kawasaki.jp", "city.kawasaki.jp"),  # exception rule !city.kawasaki.jp
        ("a.b.kawasaki.jp", "a.b.kawasaki.jp"),  # wildcard *.kawasaki.jp
        ("mail.example.test", "example.test"),  # unknown TLD: one label
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "from_dom", "mode", "aligned"),
    [
        ("example.com", "example.com", S, True),
        ("EXAMPLE.com.", "example.com", S, True),
        ("mail.example.com", "example.com", S, False),
        ("mail.example.com", "example.com", R, True),
        ("example.com", "news.example.com", R, True),
        ("a.example.com", "b.example.com", R, True),
        ("example.net", "example.com", R, False),
        ("mail.example.co.uk", "example.co.uk", R, True),
        ("example.co.uk", "mail.example.co.uk", R, True),
        ("other.co.uk", "example.co.uk", R, False),  # the public suffix is not shared ownership
        ("co.uk", "example.co.uk", R, False),
        ("", "example.com", R, False),
    ],
)
def test_alignment(identifier: str, from_dom: str, mode: Alignment, aligned: bool) -> None:
    assert is_aligned(identifier, from_dom, mode) is aligned


# ---- §6.6.1 RFC5322.From domain ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"From: Alice <alice@Example.COM>\r\n", "example.com"),
        (b"From: alice@example.com\r\n", "example.com"),
        (b"From: =?utf-8?q?Al=C3=AFce?= <alice@mail.example.co.uk>\r\n", "mail.example.co.uk"),
        (b"From: a@example.com, b@example.com\r\n", "example.com"),
        (b"From: a@example.com, b@example.net\r\n", None),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n", None),
        (b"To: b@example.com\r\n", None),
        (b"From: undisclosed\r\n", None),
        (b"From: Alice\r\n <alice@example.org>\r\n", "example.org"),
        ("From: a@b\u00fccher.example\r\n".encode(), "xn--bcher-kva.example"),
    ],
)
def test_from_domain(headers: bytes, expected: str | None) -> None:
    assert from_domain(headers + b"Subject: x\r\n\r\nbody\r\n") == expected


def test_from_domain_reads_the_header_section_only() -> None:
    assert from_domain(b"From: a@example.com\n\nFrom: b@example.net\r\n") == "example.com"
    assert from_domain(b"\r\nFrom: a@example.com\r\n") is None  # no header fields: all body
    assert from_domain(b"From: a@example.com") == "example.com"  # no body


# ---- §6.6 evaluation --------------------------------------------------------------------------

ZONE = {
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r"]},
    "_dmarc.sub.example.com": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.nosp.example": {"TXT": ["v=DMARC1; p=quarantine"]},
    "_dmarc.example.co.uk": {"TXT": ["v=DMARC1; p=reject"]},
    "_dmarc.pct.example": {"TXT": ["v=DMARC1; p=reject; pct=25"]},
    "_dmarc.pctq.example": {"TXT": ["v=DMARC1; p=quarantine; pct=25"]},
    "_dmarc.pct0.example": {"TXT": ["v=DMARC1; p=reject; pct=0"]},
    "_dmarc.multi.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.badp.example": {"TXT": ["v=DMARC1; p=bogus"]},
    "_dmarc.badp-rua.example": {"TXT": ["v=DMARC1; p=bogus; rua=mailto:d@badp-rua.example"]},
    "_dmarc.other-txt.example": {"TXT": ["hello", "v=DMARC1; p=quarantine"]},
    "_dmarc.co.uk": {"TXT": ["v=DMARC1; p=reject"]},
}


def spf(result: SpfVerdict, domain: str) -> SpfResult:
    return SpfResult(result, domain, SpfIdentity.MAILFROM, f"bounce@{domain}")


def dkim(result: DkimVerdict, domain: str) -> DkimResult:
    return DkimResult(result, domain=domain, selector="s", algorithm="rsa-sha256")


PASS_SPF, FAIL_SPF = SpfVerdict.PASS, SpfVerdict.FAIL
PASS_DKIM, FAIL_DKIM = DkimVerdict.PASS, DkimVerdict.FAIL

# (id, From domain, SPF, DKIM, result, requested, disposition, policy domain)
CASES = [
    ("spf-relaxed", "example.com", spf(PASS_SPF, "bounce.example.com"), [], "pass", REJECT, NONE,
     "example.com"),
    ("spf-must-pass", "example.com", spf(SpfVerdict.SOFTFAIL, "example.com"), [], "fail", REJECT,
     REJECT, "example.com"),
    ("spf-unaligned", "example.com", spf(PASS_SPF, "example.net"), [], "fail", REJECT, REJECT,
     "example.com"),
    ("dkim-strict-exact", "example.com", None, [dkim(PASS_DKIM, "example.com")], "pass", REJECT,
     NONE, "example.com"),
    ("dkim-strict-subdomain", "example.com", None, [dkim(PASS_DKIM, "mail.example.com")], "fail",
     REJECT, REJECT, "example.com"),
    ("dkim-must-pass", "example.com", None, [dkim(FAIL_DKIM, "example.com")], "fail", REJECT,
     REJECT, "example.com"),
    ("any-aligned-signature", "example.com", None,
     [dkim(PASS_DKIM, "example.net"), dkim(PASS_DKIM, "example.com")], "pass", REJECT, NONE,
     "example.com"),
    ("sp-for-subdomain", "news.example.com", None, [], "fail", QUARANTINE, QUARANTINE,
     "example.com"),
    ("sp-relaxed-spf-pass", "news.example.com", spf(PASS_SPF, "example.com"), [], "pass",
     QUARANTINE, NONE, "example.com"),
    ("own-record-beats-sp", "sub.example.com", None, [], "fail", NONE, NONE, "sub.example.com"),
    ("p-when-no-sp", "deep.er.nosp.example", None, [], "fail", QUARANTINE, QUARANTINE,
     "nosp.example"),
    ("psl-co-uk-relaxed", "mail.example.co.uk", None, [dkim(PASS_DKIM, "example.co.uk")], "pass",
     REJECT, NONE, "example.co.uk"),
    ("psl-co-uk-other", "example.co.uk", spf(PASS_SPF, "other.co.uk"),
     [dkim(PASS_DKIM, "co.uk")], "fail", REJECT, REJECT, "example.co.uk"),
    ("psl-no-fallback-above-org", "nodmarc.co.uk", None, [], "none", None, NONE, ""),
    ("no-record", "nodmarc.example", spf(PASS_SPF, "nodmarc.example"), [], "none", None, NONE, ""),
    ("multiple-records", "multi.example", None, [], "permerror", None, NONE, "multi.example"),
    ("invalid-p", "badp.example", None, [], "permerror", None, NONE, "badp.example"),
    ("invalid-p-with-rua", "badp-rua.example", None, [], "fail", NONE, NONE, "badp-rua.example"),
    ("non-dmarc-txt-ignored", "other-txt.example", None, [], "fail", QUARANTINE, QUARANTINE,
     "other-txt.example"),
    ("servfail", "broken.example", None, [], "temperror", None, NONE, ""),
    ("servfail-at-org", "mail.broken-org.example", None, [], "temperror", None, NONE, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("from_dom", "spf_result", "dkim_results", "result", "requested", "disposition", "where"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_check_dmarc(
    from_dom: str,
    spf_result: SpfResult | None,
    dkim_results: list[DkimResult],
    result: str,
    requested: Disposition | None,
    disposition: Disposition,
    where: str,
) -> None:
    resolver = FakeResolver(ZONE, servfail=["_dmarc.broken.example", "_dmarc.broken-org.example"])
    dmarc = await check_dmarc(from_dom, spf_result, dkim_results, resolver, sample=lambda: 0.0)
    assert (dmarc.result, dmarc.requested, dmarc.disposition) == (
        result,
        requested,
        disposition,
    ), dmarc.detail
    assert dmarc.policy_domain == where
    assert dmarc.from_domain == from_dom


async def test_fallback_queries_org_domain_once() -> None:
    resolver = FakeResolver(ZONE)
    await check_dmarc("a.b.news.example.com", None, [], resolver)
    assert resolver.queries == [
        ("_dmarc.a.b.news.example.com", "TXT"),
        ("_dmarc.example.com", "TXT"),
    ]


async def test_alignment_flags() -> None:
    result = await check_dmarc(
        "example.com",
        spf(PASS_SPF, "example.com"),
        [dkim(PASS_DKIM, "example.com")],
        FakeResolver(ZONE),
    )
    assert (result.spf_aligned, result.dkim_aligned, result.org_domain) == (
        True,
        True,
        "example.com",
    )


@pytest.mark.parametrize(
    ("domain", "draw", "disposition", "sampled_out"),
    [
        ("pct.example", 0.0, REJECT, False),
        ("pct.example", 0.2499, REJECT, False),
        ("pct.example", 0.25, QUARANTINE, True),  # not selected: the next less strict policy
        ("pct.example", 0.99, QUARANTINE, True),
        ("pctq.example", 0.99, NONE, True),
        ("pctq.example", 0.1, QUARANTINE, False),
        ("pct0.example", 0.0, QUARANTINE, True),  # pct=0 never applies the policy
        ("example.com", 0.999999, REJECT, False),  # pct=100 always does
    ],
)
async def test_pct(domain: str, draw: float, disposition: Disposition, sampled_out: bool) -> None:
    result = await check_dmarc(domain, None, [], FakeResolver(ZONE), sample=lambda: draw)
    assert (result.result, result.disposition, result.sampled_out) == (
        DmarcVerdict.FAIL,
        disposition,
        sampled_out,
    )


async def test_no_sampling_for_pass_or_p_none() -> None:
    def never() -> float:
        raise AssertionError("sampled")

    resolver = FakeResolver(ZONE)
    passed = await check_dmarc(
        "pct.example", spf(PASS_SPF, "pct.example"), [], resolver, sample=never
    )
    assert passed.result is DmarcVerdict.PASS
    none_policy = await check_dmarc("sub.example.com", None, [], resolver, sample=never)
    assert none_policy.disposition is NONE


@pytest.mark.parametrize("from_dom", [None, ""])
async def test_no_from_domain_is_permerror(from_dom: str | None) -> None:
    result = await check_dmarc(from_dom, None, [], FakeResolver(ZONE))
    assert (result.result, result.disposition) == (DmarcVerdict.PERMERROR, NONE)
