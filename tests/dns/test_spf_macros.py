"""RFC 7208 §7 macro expansion (the §7.4 examples and more) and the record parser's robustness."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.dns.spf import expand_macro_string
from mailboxkit.dns.spfrecord import SpfRecord, SpfSyntaxError, parse_record

V4 = "192.0.2.10"

# ---- §7.4 macro examples -------------------------------------------------------------------

RFC_7208_7_4 = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize(("macro", "expected"), RFC_7208_7_4)
async def test_rfc_7208_7_4_examples(macro: str, expected: str) -> None:
    value = await expand_macro_string(
        macro,
        ip="192.0.2.3",
        sender="strong-bad@email.example.com",
        domain="email.example.com",
        helo="mx.example.org",
        resolver=FakeResolver(),
    )
    assert value == expected


async def test_rfc_7208_7_4_ipv6_example() -> None:
    value = await expand_macro_string(
        "%{ir}.%{v}._spf.%{d2}",
        ip="2001:db8::cb01",
        sender="strong-bad@email.example.com",
        domain="email.example.com",
        helo="h",
        resolver=FakeResolver(),
    )
    assert value == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


@pytest.mark.parametrize(
    ("macro", "explanation", "expected"),
    [
        ("%%%_%-", False, "% %20"),
        ("%{S}", False, "strong-bad%40email.example.com"),
        ("%{h}", False, "mx.example.org"),
        ("%{v}", False, "in-addr"),
        ("%{i}", False, "192.0.2.3"),
        ("%{d2r-}", False, "email.example.com"),  # split on "-" only: one part
        ("%{c} %{r} %{t}", True, "192.0.2.3 receiver.example 42"),
        ("%{C}", True, "192.0.2.3"),
    ],
)
async def test_more_macros(macro: str, explanation: bool, expected: str) -> None:
    value = await expand_macro_string(
        macro,
        ip="::ffff:192.0.2.3",
        sender="strong-bad@email.example.com",
        domain="email.example.com",
        helo="mx.example.org",
        resolver=FakeResolver(),
        explanation=explanation,
        receiver="receiver.example",
        now=lambda: 42.9,
    )
    assert value == expected


@pytest.mark.parametrize("bad", ["%{c}", "%{x}", "%{d0}", "%(d)", "50%", "%{d", "%{d2!}", "a b"])
async def test_bad_macro_strings(bad: str) -> None:
    with pytest.raises(SpfSyntaxError):
        await expand_macro_string(
            bad,
            ip=V4,
            sender="a@b.example",
            domain="b.example",
            helo="h",
            resolver=FakeResolver(),
        )


# ---- the parser on arbitrary input -----------------------------------------------------------

SPF_ALPHABET = st.sampled_from(list("v=spf1 aAllmxptr46ixsncudeo:./-+~?%{}_,0123456789\r\u00e9"))


@given(st.text(SPF_ALPHABET, max_size=60) | st.text(max_size=60))
def test_parse_record_raises_only_syntax_errors(text: str) -> None:
    for candidate in (text, "v=spf1 " + text):
        with contextlib.suppress(SpfSyntaxError):
            assert isinstance(parse_record(candidate), SpfRecord)
