"""RFC 7208 check_host() against FakeResolver: every mechanism, modifier, macro and limit.

Case names follow the RFC section they exercise; the zone uses documentation addresses.
"""

from __future__ import annotations

import asyncio

import pytest

from mailboxkit.dns.resolver import DnsTempError, FakeResolver, RecordSet, reverse_name
from mailboxkit.dns.spf import (
    DEFAULT_EXPLANATION,
    SpfIdentity,
    SpfResult,
    SpfVerdict,
    check_spf,
)

V4 = "192.0.2.10"
V6 = "2001:db8::10"
OTHER_V4 = "198.51.100.99"
LONG_LABEL = "a" * 64


def spf(text: str, **extra: list[str] | list[tuple[int, str]]) -> RecordSet:
    return {"TXT": [text], **extra}


ZONE: dict[str, RecordSet] = {
    "mail.example.com": {"A": [V4], "AAAA": [V6]},
    "other.example.com": {"A": ["192.0.2.200"], "AAAA": ["2001:db8::200"]},
    "v6only.example.com": {"AAAA": [V6]},
    "v4only.example.com": {"A": ["203.0.113.1"]},
    # §4.3, §4.4, §4.5: initial processing and record selection
    "nospf.example.com": {"A": [V4], "TXT": ["some other text"]},
    f"{'a' * 63}.example.com": spf("v=spf1 -all"),
    "helo.example.com": spf("v=spf1 a -all", A=[V4]),
    "postmaster.example.com": spf("v=spf1 -all exp=pm.exp.example.com"),
    "pm.exp.example.com": {"TXT": ["%{l} at %{o}"]},
    "two.example.com": {"TXT": ["v=spf1 -all", "V=SPF1 +all"]},
    "mixed.example.com": {"TXT": ["verification=abc", "v=spf1 -all", "v=spf10 +all"]},
    "bare.example.com": spf("v=spf1"),
    "nospace.example.com": spf("v=spf1mx"),
    "case.example.com": spf("V=SpF1 ~all"),
    "spaces.example.com": spf("v=spf1  ip4:192.0.2.10   -all  "),
    "nonascii.example.com": spf("v=spf1 a:\u00e9.example.com -all"),
    "ctrl.example.com": spf("v=spf1 a\rptr -all"),
    "txt-servfail.example.com": {},
    "txt-timeout.example.com": {},
    # §5.1 all
    "all-fail.example.com": spf("v=spf1 -all"),
    "all-soft.example.com": spf("v=spf1 ~all"),
    "all-neutral.example.com": spf("v=spf1 ?all"),
    "all-pass.example.com": spf("v=spf1 all -all"),
    "all-dot.example.com": spf("v=spf1 -all."),
    "all-arg.example.com": spf("v=spf1 -all:foo"),
    "all-cidr.example.com": spf("v=spf1 -all/8"),
    "default.example.com": spf("v=spf1 ip4:203.0.113.0/24"),
    # §5.6 ip4 / ip6
    "ip4.example.com": spf("v=spf1 ip4:192.0.2.0/24 -all"),
    "ip4-0.example.com": spf("v=spf1 ip4:203.0.113.1/0 -all"),
    "ip4-host.example.com": spf("v=spf1 ip4:192.0.2.10 -all"),
    "ip4-33.example.com": spf("v=spf1 ip4:192.0.2.10/33 -all"),
    "ip4-lead0.example.com": spf("v=spf1 ip4:192.0.2.10/032 -all"),
    "ip4-short.example.com": spf("v=spf1 ip4:192.0.2 -all"),
    "ip4-port.example.com": spf("v=spf1 ip4:192.0.2.10:25 -all"),
    "ip4-dual.example.com": spf("v=spf1 ip4:192.0.2.10//32 -all"),
    "ip4-bare.example.com": spf("v=spf1 ip4 -all"),
    "ip6.example.com": spf("v=spf1 ip6:2001:db8::/32 -all"),
    "ip6-all.example.com": spf("v=spf1 ip6:::/0"),
    "ip6-33.example.com": spf("v=spf1 ip6:2001:db8:8000::/33"),
    "ip6-mapped.example.com": spf("v=spf1 -ip4:192.0.2.10 ip6:::ffff:192.0.2.10"),
    "ip6-129.example.com": spf("v=spf1 ip6:2001:db8::/129"),
    "ip6-dual.example.com": spf("v=spf1 ip6:2001:db8::1//64"),
    "ip6-bad.example.com": spf("v=spf1 ip6::2001::db8"),
    # §5.3 a
    "a.example.com": spf("v=spf1 a -all", A=[V4], AAAA=[V6]),
    "a-target.example.com": spf("v=spf1 a:mail.example.com -all"),
    "a-cidr4.example.com": spf("v=spf1 a:v4only.example.com/24 -all"),
    "a-cidr6.example.com": spf("v=spf1 a:v6only.example.com//64 -all"),
    "a-dual.example.com": spf("v=spf1 a:other.example.com/24//64 -all"),
    "a-zero.example.com": spf("v=spf1 a:v4only.example.com/0 -all"),
    "a-zero6.example.com": spf("v=spf1 a:v6only.example.com//0 -all"),
    "a-nx.example.com": spf("v=spf1 a:nowhere.example.com/0 -all"),
    "a-dual-bad.example.com": spf("v=spf1 a/24/64 -all"),
    "a-33.example.com": spf("v=spf1 a/33 -all"),
    "a-129.example.com": spf("v=spf1 a//129 -all"),
    "a-empty.example.com": spf("v=spf1 a: -all"),
    "a-onelabel.example.com": spf("v=spf1 a:museum -all"),
    "a-numeric.example.com": spf("v=spf1 a:192.0.2.10 -all"),
    "a-dash.example.com": spf("v=spf1 a:example.-com -all"),
    "a-port.example.com": spf("v=spf1 a:mail.example.com:8080 -all"),
    "a-colon.example.com": spf("v=spf1 a:foo:bar/baz.example.com -all"),
    "foo:bar/baz.example.com": {"A": [V4]},
    "a-idn.example.com": spf("v=spf1 a:mail.example.xn--zckzah -all"),
    "mail.example.xn--zckzah": {"A": [V4]},
    "a-servfail.example.com": spf("v=spf1 a:broken.example.com -all"),
    # §5.4 mx
    "mx.example.com": spf(
        "v=spf1 mx -all", MX=[(10, "other.example.com"), (20, "mail.example.com")]
    ),
    "mx-cidr.example.com": spf("v=spf1 mx/24//64 -all", MX=[(10, "other.example.com")]),
    "mx-null.example.com": spf("v=spf1 mx", MX=[(0, ".")]),
    "mx-implicit.example.com": spf("v=spf1 mx", A=[V4]),
    "mx-target.example.com": spf("v=spf1 mx:mx.example.com -all"),
    "mx-ten.example.com": spf(
        "v=spf1 mx -all",
        MX=[(i, f"h{i}.example.com") for i in range(9)] + [(9, "mail.example.com")],
    ),
    "mx-eleven.example.com": spf(
        "v=spf1 mx -all",
        MX=[(i, f"h{i}.example.com") for i in range(10)] + [(10, "mail.example.com")],
    ),
    "mx-servfail.example.com": spf("v=spf1 mx:broken.example.com -all"),
    "mx-host-servfail.example.com": spf("v=spf1 mx -all", MX=[(10, "broken.example.com")]),
    "mx-empty.example.com": spf("v=spf1 mx: -all"),
    # §5.5 ptr
    "ptr.example.com": spf("v=spf1 ptr -all", A=[V4]),
    "10.2.0.192.in-addr.arpa": {"PTR": ["bogus.example.net", "mail.example.com"]},
    reverse_name(V6): {"PTR": ["mail.example.com"]},
    "ptr-target.example.com": spf("v=spf1 ptr:example.com -all"),
    "ptr-case.example.com": spf("v=spf1 ptr:EXAMPLE.Com -all"),
    "ptr-elsewhere.example.com": spf("v=spf1 ptr:example.org -all"),
    "ptr-cidr.example.com": spf("v=spf1 ptr/0 -all"),
    "ptr-empty.example.com": spf("v=spf1 ptr: -all"),
    # 203.0.113.5 has a PTR that does not lead back; 203.0.113.6's PTR lookup fails.
    "5.113.0.203.in-addr.arpa": {"PTR": ["mail.example.com"]},
    # §5.7 exists
    "exists.example.com": spf("v=spf1 exists:%{ir}.list.example.com -all"),
    "10.2.0.192.list.example.com": {"A": ["127.0.0.2"]},
    "exists-v6.example.com": spf("v=spf1 exists:mail.example.com -all"),
    "exists-v6only.example.com": spf("v=spf1 exists:v6only.example.com -all"),
    "exists-bare.example.com": spf("v=spf1 exists -all"),
    "exists-empty.example.com": spf("v=spf1 exists: -all"),
    "exists-cidr.example.com": spf("v=spf1 exists:mail.example.com/24 -all"),
    "exists-servfail.example.com": spf("v=spf1 exists:broken.example.com -all"),
    # §5.2 include
    "inc-pass.example.com": spf("v=spf1 include:pass.inc.example.com -all"),
    "inc-fail.example.com": spf("v=spf1 include:fail.inc.example.com ~all"),
    "inc-soft.example.com": spf("v=spf1 include:soft.inc.example.com -all"),
    "inc-neutral.example.com": spf("v=spf1 include:neutral.inc.example.com -all"),
    "inc-temp.example.com": spf("v=spf1 include:broken.example.com +all"),
    "inc-perm.example.com": spf("v=spf1 include:perm.inc.example.com +all"),
    "inc-none.example.com": spf("v=spf1 include:nospf.example.com +all"),
    "inc-nx.example.com": spf("v=spf1 include:nowhere.example.com +all"),
    "inc-bare.example.com": spf("v=spf1 include +all"),
    "inc-cidr.example.com": spf("v=spf1 include:pass.inc.example.com/24 +all"),
    "inc-dot.example.com": spf("v=spf1 include:pass.inc.example.com. -all"),
    "inc-domain.example.com": spf("v=spf1 include:a.example.com -all"),
    "pass.inc.example.com": spf("v=spf1 ip4:192.0.2.0/24 -all"),
    "fail.inc.example.com": spf("v=spf1 -ip4:192.0.2.0/24"),
    "soft.inc.example.com": spf("v=spf1 ~all"),
    "neutral.inc.example.com": spf("v=spf1 ?all"),
    "perm.inc.example.com": spf("v=spf1 frobnicate"),
    # §6.1 redirect
    "redir.example.com": spf("v=spf1 redirect=target.redir.example.com"),
    "target.redir.example.com": spf("v=spf1 a -all", A=[V4]),
    "redir-none.example.com": spf("v=spf1 redirect=nospf.example.com"),
    "redir-loop.example.com": spf("v=spf1 ip4:203.0.113.1 redirect=redir-loop.example.com"),
    "redir-with-all.example.com": spf("v=spf1 redirect=redir-loop.example.com ~all"),
    "redir-after.example.com": spf("v=spf1 ip4:192.0.2.10 redirect=all-fail.example.com"),
    "redir-twice.example.com": spf("v=spf1 redirect=a.example.com redirect=a.example.com"),
    "redir-empty.example.com": spf("v=spf1 redirect="),
    "redir-bad.example.com": spf("v=spf1 redirect=-all ?all"),
    "redir-colon.example.com": spf("v=spf1 redirect:a.example.com"),
    "redir-macro.example.com": spf("v=spf1 redirect=%{d}.d.spf.example.com."),
    "redir-macro.example.com.d.spf.example.com": spf("v=spf1 a -all", A=[V4]),
    # §6 modifiers, §6.2 exp
    "exp.example.com": spf("v=spf1 -all exp=explain.example.com"),
    "explain.example.com": {"TXT": ["%{i} is not one of %{d}'s designated mail servers."]},
    "exp-crt.example.com": spf("v=spf1 -all exp=crt.exp.example.com"),
    "crt.exp.example.com": {"TXT": ["%{c} via %{r} at %{t}"]},
    "exp-two.example.com": spf("v=spf1 -all exp=two.exp.example.com"),
    "two.exp.example.com": {"TXT": ["one", "two"]},
    "exp-none.example.com": spf("v=spf1 -all exp=mail.example.com"),
    "exp-err.example.com": spf("v=spf1 -all exp=broken.example.com"),
    "exp-syntax.example.com": spf("v=spf1 -all exp=syntax.exp.example.com"),
    "syntax.exp.example.com": {"TXT": ["The %{x}-files."]},
    "exp-nonascii.example.com": spf("v=spf1 -all exp=nonascii.exp.example.com"),
    "nonascii.exp.example.com": {"TXT": ["\u00e9xplanation"]},
    "exp-empty.example.com": spf("v=spf1 exp= -all"),
    "exp-crt-domain.example.com": spf("v=spf1 -all exp=%{r}.example.com"),
    "exp-twice.example.com": spf("v=spf1 exp=explain.example.com -all exp=explain.example.com"),
    "exp-softfail.example.com": spf("v=spf1 ~all exp=explain.example.com"),
    "exp-include.example.com": spf(
        "v=spf1 include:exp-redirect.example.com -all exp=correct.exp.example.com"
    ),
    "correct.exp.example.com": {"TXT": ["Correct!"]},
    "exp-redirect.example.com": spf(
        "v=spf1 exp=nosee.exp.example.com redirect=exp-target.example.com"
    ),
    "nosee.exp.example.com": {"TXT": ["No-see-um"]},
    "exp-target.example.com": spf("v=spf1 -all exp=seeme.exp.example.com"),
    "seeme.exp.example.com": {"TXT": ["See me at %{d}."]},
    "exp-redirect-noexp.example.com": spf(
        "v=spf1 exp=nosee.exp.example.com redirect=all-fail.example.com"
    ),
    "exp-void.example.com": spf(
        "v=spf1 a:nx1.example.com a:nx2.example.com exp=nx3.example.com -all"
    ),
    "exp-url.example.com": spf("v=spf1 -all exp=url.%{D2}"),
    "url.example.com": {"TXT": ["http://example.com/why.html?l=%{L}"]},
    "exp-long.example.com": spf(
        "v=spf1 -all exp=" + ".".join(["%{o}"] * 12) + ".explain.example.com"
    ),
    "modifier-unknown.example.com": spf("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.10 -all"),
    "modifier-bad-macro.example.com": spf("v=spf1 -all foo=%abc"),
    "modifier-digit.example.com": spf("v=spf1 1up=foo -all"),
    "modifier-noname.example.com": spf("v=spf1 =all"),
    "modifier-slash.example.com": spf("v=spf1 moo.cow/far_out=man:dog/cat -all"),
    "modifier-default.example.com": spf("v=spf1 default=pass"),
    # §7 macros
    "email.example.com": spf("v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all"),
    "3.2.0.192.in-addr._spf.example.com": {"A": ["127.0.0.2"]},
    "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com": {
        "A": ["127.0.0.2"]
    },
    "lp.example.com": spf("v=spf1 exists:%{lr-}.lp._spf.%{d2} -all"),
    "bad.strong.lp._spf.example.com": {"A": ["127.0.0.2"]},
    "escapes.example.com": spf("v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all"),
    "macro%percent  space%20url-space.example.com": {"A": [V4]},
    "delims.example.com": spf("v=spf1 exists:%{l2r+-}.user.%{d2} -all"),
    "bar.foo.user.example.com": {"A": ["127.0.0.2"]},
    "helo-macro.example.com": spf("v=spf1 a:%{h} -all"),
    "helo-upper.example.com": spf("v=spf1 a:%{H} -all"),
    "p-macro.example.com": spf("v=spf1 -all exp=p.exp.example.com"),
    "p.exp.example.com": {"TXT": ["connect from %{p}"]},
    "p-exists.example.com": spf("v=spf1 exists:%{p}.ok.example.com -all"),
    "mail.example.com.ok.example.com": {"A": ["127.0.0.2"]},
    "macro-paren.example.com": spf("v=spf1 -exists:%(ir).sbl.example.com ?all"),
    "macro-trailing.example.com": spf("v=spf1 exists:foo%.sbl.example.com ?all"),
    "macro-letter.example.com": spf("v=spf1 a:%{a}.example.com -all"),
    "macro-zero.example.com": spf("v=spf1 a:%{d0}.example.com -all"),
    "macro-crt.example.com": spf("v=spf1 a:%{c}.example.com -all"),
    # §4.6.4 limits
    "ten.example.com": spf("v=spf1 " + "a:v4only.example.com " * 10 + "ip4:192.0.2.10 -all"),
    "eleven.example.com": spf("v=spf1 " + "a:v4only.example.com " * 11 + "ip4:192.0.2.10 -all"),
    "inc-at-limit.example.com": spf(
        "v=spf1 a:v4only.example.com include:eight.example.com ip4:192.0.2.10 mx -all"
    ),
    "inc-over-limit.example.com": spf(
        "v=spf1 a:v4only.example.com include:eight.example.com a:v4only.example.com -all"
    ),
    "eight.example.com": spf("v=spf1 " + "a:v4only.example.com " * 8),
    "loop1.example.com": spf("v=spf1 include:loop2.example.com"),
    "loop2.example.com": spf("v=spf1 include:loop1.example.com"),
    "void-two.example.com": spf("v=spf1 a:nx1.example.com mx:nx2.example.com ?all"),
    "void-three.example.com": spf(
        "v=spf1 a:nx1.example.com mx:nx2.example.com exists:nx3.example.com ?all"
    ),
    "void-nodata.example.com": spf(
        "v=spf1 a:v6only.example.com a:v6only.example.com a:v6only.example.com ?all"
    ),
    "void-include.example.com": spf("v=spf1 a:nx1.example.com include:void-two.example.com"),
    "ptr-eleven.example.com": spf("v=spf1 ptr -all", A=["192.0.2.11"]),
    "11.2.0.192.in-addr.arpa": {
        "PTR": [f"n{i}.example.com" for i in range(10)] + ["ptr-eleven.example.com"]
    },
    "n0.example.com": {"A": ["192.0.2.1"]},
    "many-a.example.com": spf(
        "v=spf1 a -all", A=[f"192.0.2.{i}" for i in range(100, 130)] + ["192.0.2.10"]
    ),
}
BROKEN = ["broken.example.com", "txt-servfail.example.com", "6.113.0.203.in-addr.arpa"]
SLOW = ["txt-timeout.example.com"]


def resolver() -> FakeResolver:
    return FakeResolver(ZONE, servfail=BROKEN, timeout=SLOW)


P, F, S, N = SpfVerdict.PASS, SpfVerdict.FAIL, SpfVerdict.SOFTFAIL, SpfVerdict.NEUTRAL
NONE, TEMP, PERM = SpfVerdict.NONE, SpfVerdict.TEMPERROR, SpfVerdict.PERMERROR

# (case id, ip, MAIL FROM domain or full address, expected)
CASES: list[tuple[str, str, str, SpfVerdict]] = [
    # §4.3 initial processing, §4.4 record lookup, §4.5 selection
    ("4.3-no-spf-record", V4, "nospf.example.com", NONE),
    ("4.3-nxdomain", V4, "nowhere.example.com", NONE),
    ("4.3-label-too-long", V4, f"{LONG_LABEL}.example.com", NONE),
    ("4.3-label-63-ok", V4, f"{'a' * 63}.example.com", F),
    ("4.3-empty-label", V4, "a..example.com", NONE),
    ("4.3-single-label", V4, "localhost", NONE),
    ("4.3-domain-literal", V4, "user@[192.0.2.10]", NONE),
    ("4.4-txt-servfail", V4, "txt-servfail.example.com", TEMP),
    ("4.4-txt-timeout", V4, "txt-timeout.example.com", TEMP),
    ("4.5-multiple-records", V4, "two.example.com", PERM),
    ("4.5-other-txt-ignored", V4, "mixed.example.com", F),
    ("4.5-version-only", V4, "bare.example.com", N),
    ("4.5-version-needs-space", V4, "nospace.example.com", NONE),
    ("4.5-version-any-case", V4, "case.example.com", S),
    ("4.6.1-extra-spaces", V4, "spaces.example.com", P),
    ("3.1-non-ascii", V4, "nonascii.example.com", PERM),
    ("4.6.1-control-char", V4, "ctrl.example.com", PERM),
    ("4.7-default-neutral", V4, "default.example.com", N),
    # §5.1 all
    ("5.1-fail", V4, "all-fail.example.com", F),
    ("5.1-softfail", V4, "all-soft.example.com", S),
    ("5.1-neutral", V4, "all-neutral.example.com", N),
    ("5.1-first-match-wins", V4, "all-pass.example.com", P),
    ("5.1-trailing-dot", V4, "all-dot.example.com", PERM),
    ("5.1-argument", V4, "all-arg.example.com", PERM),
    ("5.1-cidr", V4, "all-cidr.example.com", PERM),
    # §5.6 ip4 / ip6, §5 IPv4-mapped
    ("5.6-ip4-network", "192.0.2.77", "ip4.example.com", P),
    ("5.6-ip4-outside", OTHER_V4, "ip4.example.com", F),
    ("5.6-ip4-slash0", OTHER_V4, "ip4-0.example.com", P),
    ("5.6-ip4-host", V4, "ip4-host.example.com", P),
    ("5.6-ip4-not-ip6", V6, "ip4-0.example.com", F),
    ("5.6-ip4-cidr-33", V4, "ip4-33.example.com", PERM),
    ("5.6-ip4-leading-zero", V4, "ip4-lead0.example.com", PERM),
    ("5.6-ip4-short", V4, "ip4-short.example.com", PERM),
    ("5.6-ip4-port", V4, "ip4-port.example.com", PERM),
    ("5.6-ip4-dual-cidr", V4, "ip4-dual.example.com", PERM),
    ("5.6-ip4-bare", V4, "ip4-bare.example.com", PERM),
    ("5-ipv4-mapped-is-ip4", "::ffff:192.0.2.77", "ip4.example.com", P),
    ("5-ipv4-mapped-not-ip6", "::ffff:192.0.2.10", "ip6-mapped.example.com", F),
    ("5.6-ip6-network", "2001:db8:1::1", "ip6.example.com", P),
    ("5.6-ip6-v4-client", V4, "ip6.example.com", F),
    ("5.6-ip6-slash0-v4-client", V4, "ip6-all.example.com", N),
    ("5.6-ip6-slash0", "2001:db8::1", "ip6-all.example.com", P),
    ("5.6-ip6-cidr-33-inside", "2001:db8:8000::1", "ip6-33.example.com", P),
    ("5.6-ip6-cidr-33-outside", "2001:db8::1", "ip6-33.example.com", N),
    ("5.6-ip6-cidr-129", V4, "ip6-129.example.com", PERM),
    ("5.6-ip6-dual-cidr", V4, "ip6-dual.example.com", PERM),
    ("5.6-ip6-bad-address", V4, "ip6-bad.example.com", PERM),
    # §5.3 a
    ("5.3-implicit-domain", V4, "a.example.com", P),
    ("5.3-implicit-domain-v6", V6, "a.example.com", P),
    ("5.3-no-match", OTHER_V4, "a.example.com", F),
    ("5.3-target", V4, "a-target.example.com", P),
    ("5.3-cidr4", "203.0.113.77", "a-cidr4.example.com", P),
    ("5.3-cidr4-outside", "203.0.114.1", "a-cidr4.example.com", F),
    ("5.3-cidr6", "2001:db8::ffff", "a-cidr6.example.com", P),
    ("5.3-dual-cidr-v4", "192.0.2.99", "a-dual.example.com", P),
    ("5.3-dual-cidr-v6", "2001:db8::abcd", "a-dual.example.com", P),
    ("5.3-slash0-needs-records", OTHER_V4, "a-zero.example.com", P),
    ("5.3-slash0-v6-client-uses-aaaa", "2001:db8:ff::1", "a-zero.example.com", F),
    ("5.3-slash0-v6", "2001:db8:ff::1", "a-zero6.example.com", P),
    ("5.3-slash0-v6-mapped-client", "::ffff:192.0.2.10", "a-zero6.example.com", F),
    ("5.3-nxdomain-no-match", V4, "a-nx.example.com", F),
    ("5.3-bad-dual-cidr", V4, "a-dual-bad.example.com", PERM),
    ("5.3-cidr4-33", V4, "a-33.example.com", PERM),
    ("5.3-cidr6-129", V4, "a-129.example.com", PERM),
    ("5.3-empty-domain", V4, "a-empty.example.com", PERM),
    ("7.1-single-label-spec", V4, "a-onelabel.example.com", PERM),
    ("7.1-numeric-toplabel", V4, "a-numeric.example.com", PERM),
    ("7.1-toplabel-leading-dash", V4, "a-dash.example.com", PERM),
    ("7.1-port-in-toplabel", V4, "a-port.example.com", PERM),
    ("7.1-colon-in-domain-spec", V4, "a-colon.example.com", P),
    ("7.1-dash-toplabel", V4, "a-idn.example.com", P),
    ("5-a-servfail", V4, "a-servfail.example.com", TEMP),
    # §5.4 mx
    ("5.4-match-second-exchange", V4, "mx.example.com", P),
    ("5.4-match-v6", V6, "mx.example.com", P),
    ("5.4-no-match", OTHER_V4, "mx.example.com", F),
    ("5.4-dual-cidr", "192.0.2.1", "mx-cidr.example.com", P),
    ("5.4-dual-cidr-v6", "2001:db8::1", "mx-cidr.example.com", P),
    ("5.4-null-mx", V4, "mx-null.example.com", N),
    ("5.4-no-implicit-a", V4, "mx-implicit.example.com", N),
    ("5.4-target", V4, "mx-target.example.com", P),
    ("4.6.4-ten-mx", V4, "mx-ten.example.com", P),
    ("4.6.4-eleven-mx", V4, "mx-eleven.example.com", PERM),
    ("5-mx-servfail", V4, "mx-servfail.example.com", TEMP),
    ("5-mx-exchange-servfail", V4, "mx-host-servfail.example.com", TEMP),
    ("5.4-empty-domain", V4, "mx-empty.example.com", PERM),
    # §5.5 ptr
    ("5.5-validated-implicit", V4, "ptr.example.com", F),
    ("5.5-validated-target", V4, "ptr-target.example.com", P),
    ("5.5-case-insensitive", V4, "ptr-case.example.com", P),
    ("5.5-other-domain", V4, "ptr-elsewhere.example.com", F),
    ("5.5-not-validated", "203.0.113.5", "ptr-target.example.com", F),
    ("5.5-ptr-servfail-no-match", "203.0.113.6", "ptr-target.example.com", F),
    ("5.5-v6", V6, "ptr-target.example.com", P),
    ("5.5-cidr", V4, "ptr-cidr.example.com", PERM),
    ("5.5-empty-domain", V4, "ptr-empty.example.com", PERM),
    ("4.6.4-ptr-first-ten-only", "192.0.2.11", "ptr-eleven.example.com", F),
    # §5.7 exists
    ("5.7-exists", V4, "exists.example.com", P),
    ("5.7-exists-no", OTHER_V4, "exists.example.com", F),
    ("5.7-always-a-for-v6", V6, "exists-v6.example.com", P),
    ("5.7-aaaa-only-no-match", V6, "exists-v6only.example.com", F),
    ("5.7-bare", V4, "exists-bare.example.com", PERM),
    ("5.7-empty-domain", V4, "exists-empty.example.com", PERM),
    ("5.7-cidr", V4, "exists-cidr.example.com", PERM),
    ("5-exists-servfail", V4, "exists-servfail.example.com", TEMP),
    # §5.2 include
    ("5.2-pass-matches", V4, "inc-pass.example.com", P),
    ("5.2-fail-no-match", V4, "inc-fail.example.com", S),
    ("5.2-softfail-no-match", V4, "inc-soft.example.com", F),
    ("5.2-neutral-no-match", V4, "inc-neutral.example.com", F),
    ("5.2-temperror", V4, "inc-temp.example.com", TEMP),
    ("5.2-permerror", V4, "inc-perm.example.com", PERM),
    ("5.2-none-is-permerror", V4, "inc-none.example.com", PERM),
    ("5.2-nxdomain-is-permerror", V4, "inc-nx.example.com", PERM),
    ("5.2-bare", V4, "inc-bare.example.com", PERM),
    ("5.2-cidr", V4, "inc-cidr.example.com", PERM),
    ("7.1-trailing-dot-ignored", V4, "inc-dot.example.com", P),
    ("5.2-target-is-new-domain", V4, "inc-domain.example.com", P),
    # §6.1 redirect, §6 modifiers
    ("6.1-redirect", V4, "redir.example.com", P),
    ("6.1-redirect-fail", OTHER_V4, "redir.example.com", F),
    ("6.1-target-without-record", V4, "redir-none.example.com", PERM),
    ("6.1-ignored-with-all", V4, "redir-with-all.example.com", S),
    ("6.1-after-mechanisms", V4, "redir-after.example.com", P),
    ("6.1-after-mechanisms-fail", OTHER_V4, "redir-after.example.com", F),
    ("6-redirect-twice", V4, "redir-twice.example.com", PERM),
    ("6.1-empty", V4, "redir-empty.example.com", PERM),
    ("6.1-bad-domain", V4, "redir-bad.example.com", PERM),
    ("6.1-not-a-mechanism", V4, "redir-colon.example.com", PERM),
    ("6.1-macro-target", V4, "redir-macro.example.com", P),
    ("6-unknown-modifier-ignored", V4, "modifier-unknown.example.com", P),
    ("A-unknown-modifier-bad-macro", V4, "modifier-bad-macro.example.com", PERM),
    ("A-modifier-name-digit", V4, "modifier-digit.example.com", PERM),
    ("A-modifier-name-empty", V4, "modifier-noname.example.com", PERM),
    ("4.6.1-slash-before-equals", V4, "modifier-slash.example.com", PERM),
    ("6-obsolete-default-modifier", V4, "modifier-default.example.com", N),
    ("6.2-exp-empty", V4, "exp-empty.example.com", PERM),
    ("6.2-exp-twice", V4, "exp-twice.example.com", PERM),
    ("7.1-crt-not-in-exp-domain", V4, "exp-crt-domain.example.com", PERM),
    # §7 macros
    ("7.4-ir-v-d2", "192.0.2.3", "strong-bad@email.example.com", P),
    ("7.4-ir-v-d2-v6", "2001:db8::cb01", "strong-bad@email.example.com", P),
    ("7.4-ir-v-d2-other", OTHER_V4, "strong-bad@email.example.com", F),
    ("7.4-lr-", V4, "strong-bad@lp.example.com", P),
    ("7.1-escapes", V4, "escapes.example.com", P),
    ("7.1-multiple-delimiters", V4, "foo-bar+zip+quux@delims.example.com", P),
    ("7.3-p-exists", V4, "p-exists.example.com", P),
    ("7.1-percent-paren", V4, "macro-paren.example.com", PERM),
    ("7.1-trailing-percent", V4, "macro-trailing.example.com", PERM),
    ("7.1-unknown-letter", V4, "macro-letter.example.com", PERM),
    ("7.1-zero-digits", V4, "macro-zero.example.com", PERM),
    ("7.1-c-outside-exp", V4, "macro-crt.example.com", PERM),
    # §4.6.4 limits
    ("4.6.4-ten-lookups", V4, "ten.example.com", P),
    ("4.6.4-eleven-lookups", V4, "eleven.example.com", PERM),
    ("4.6.4-include-at-limit", V4, "inc-at-limit.example.com", P),
    ("4.6.4-include-over-limit", V4, "inc-over-limit.example.com", PERM),
    ("4.6.4-include-loop", V4, "loop1.example.com", PERM),
    ("4.6.4-redirect-loop", V4, "redir-loop.example.com", PERM),
    ("4.6.4-two-voids", V4, "void-two.example.com", N),
    ("4.6.4-three-voids", V4, "void-three.example.com", PERM),
    ("4.6.4-nodata-is-void", V4, "void-nodata.example.com", PERM),
    ("4.6.4-voids-across-include", V4, "void-include.example.com", PERM),
    ("4.6.4-exp-not-void", V4, "exp-void.example.com", F),
    ("4.6.4-no-limit-on-a-records", V4, "many-a.example.com", P),
]


@pytest.mark.parametrize(
    ("ip", "mail_from", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_check_host(ip: str, mail_from: str, expected: SpfVerdict) -> None:
    sender = mail_from if "@" in mail_from else f"user@{mail_from}"
    result = await check_spf(ip, sender, "helo.example.net", resolver())
    assert result.result == expected, result.detail


def test_case_ids_are_unique() -> None:
    assert len({case[0] for case in CASES}) == len(CASES)


async def test_result_fields_for_mail_from() -> None:
    result = await check_spf(V4, "<User@A.Example.com>", "helo.example.net", resolver())
    assert result == SpfResult(
        P, "a.example.com", SpfIdentity.MAILFROM, "User@A.Example.com", "", result.detail
    )


async def test_null_mail_from_checks_helo_identity() -> None:
    result = await check_spf(V4, "<>", "helo.example.com", resolver())
    assert (result.result, result.identity) == (P, SpfIdentity.HELO)
    assert (result.domain, result.sender) == ("helo.example.com", "postmaster@helo.example.com")
    assert (await check_spf(OTHER_V4, "", "helo.example.com", resolver())).result == F


@pytest.mark.parametrize("helo", ["localhost", "[192.0.2.10]", "JUMPIN' JUPITER", ""])
async def test_null_mail_from_with_unusable_helo_is_none(helo: str) -> None:
    result = await check_spf(V4, "", helo, resolver())
    assert (result.result, result.identity) == (NONE, SpfIdentity.HELO)


@pytest.mark.parametrize(
    ("helo", "expected"),
    [("mail.example.com", P), ("other.example.com", F), ("JUMPIN' JUPITER", F)],
)
async def test_helo_macro(helo: str, expected: SpfVerdict) -> None:
    resolver_ = resolver()
    result = await check_spf(V4, "u@helo-macro.example.com", helo, resolver_)
    assert result.result == expected
    upper = await check_spf(V4, "u@helo-upper.example.com", helo, resolver_)
    assert upper.result == expected  # %{H} URL-escapes: an invalid HELO just doesn't match


async def test_no_local_part_becomes_postmaster() -> None:
    result = await check_spf(V4, "@postmaster.example.com", "h.example.net", resolver())
    assert result.result == F
    assert result.sender == "postmaster@postmaster.example.com"
    assert result.explanation == "postmaster at postmaster.example.com"


# ---- §6.2 explanations -------------------------------------------------------------------


def default_explanation(domain: str, ip: str = V4) -> str:
    return DEFAULT_EXPLANATION.format(domain=domain, ip=ip)


@pytest.mark.parametrize(
    ("domain", "explanation"),
    [
        ("exp.example.com", "192.0.2.10 is not one of exp.example.com's designated mail servers."),
        ("exp-crt.example.com", "192.0.2.10 via mx.example.net at 1700000000"),
        ("exp-two.example.com", None),  # more than one TXT record
        ("exp-none.example.com", None),  # no TXT record
        ("exp-err.example.com", None),  # DNS error
        ("exp-syntax.example.com", None),  # bad macro in the text
        ("exp-nonascii.example.com", None),
        ("exp-include.example.com", "Correct!"),  # the include target's exp is not used
        ("exp-redirect.example.com", "See me at exp-target.example.com."),  # the target's is
        ("exp-redirect-noexp.example.com", None),  # the original's is never used
        ("all-fail.example.com", None),
    ],
)
async def test_explanation(domain: str, explanation: str | None) -> None:
    result = await check_spf(
        V4,
        f"u@{domain}",
        "h.example.net",
        resolver(),
        receiver="mx.example.net",
        now=lambda: 1700000000.5,
    )
    assert result.result == F
    assert result.explanation == (explanation or default_explanation(domain))


async def test_explanation_only_for_fail() -> None:
    result = await check_spf(V4, "u@exp-softfail.example.com", "h", resolver())
    assert (result.result, result.explanation) == (S, "")


async def test_explanation_upper_case_macro_is_url_escaped() -> None:
    sender = "~jack&jill=up-a_b3.c@exp-url.example.com"
    result = await check_spf(V4, sender, "h.example.net", resolver())
    assert result.explanation == "http://example.com/why.html?l=~jack%26jill%3Dup-a_b3.c"


async def test_explanation_domain_truncated_to_253() -> None:
    domain = "exp-long.example.com"
    name = ".".join([domain] * 12) + ".explain.example.com"
    while len(name) > 253:
        name = name.split(".", 1)[1]
    zone = dict(ZONE, **{name: {"TXT": ["truncated ok"]}})
    result = await check_spf(V4, f"u@{domain}", "h", FakeResolver(zone))
    assert result.explanation == "truncated ok"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [(V4, "connect from mail.example.com"), ("203.0.113.5", "connect from unknown")],
)
async def test_p_macro_in_explanation(ip: str, expected: str) -> None:
    result = await check_spf(ip, "u@p-macro.example.com", "h", resolver())
    assert result.explanation == expected


# ---- limits seen from the resolver ------------------------------------------------------


async def test_lookup_limit_stops_querying() -> None:
    resolver_ = resolver()
    result = await check_spf(V4, "u@eleven.example.com", "h", resolver_)
    assert result.result == PERM
    # the record, then one A query per counted term; the 11th term is never queried
    assert resolver_.queries == [("eleven.example.com", "TXT")] + [("v4only.example.com", "A")] * 10


async def test_void_limit_is_configurable() -> None:
    result = await check_spf(V4, "u@void-three.example.com", "h", resolver(), max_void_lookups=3)
    assert result.result == N


async def test_lookup_limit_is_configurable() -> None:
    result = await check_spf(V4, "u@ten.example.com", "h", resolver(), max_lookups=9)
    assert result.result == PERM


class HangingResolver(FakeResolver):
    """Answers TXT, then never answers anything else."""

    async def a(self, name: str) -> list[str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_evaluation_time_limit_gives_temperror() -> None:
    result = await check_spf(V4, "u@a.example.com", "h", HangingResolver(ZONE), time_limit=0.05)
    assert result.result == TEMP


async def test_invalid_ip_raises() -> None:
    with pytest.raises(ValueError):
        await check_spf("not-an-ip", "u@a.example.com", "h", resolver())


async def test_temp_error_type_is_seam_error() -> None:
    with pytest.raises(DnsTempError):
        await resolver().txt("broken.example.com")
