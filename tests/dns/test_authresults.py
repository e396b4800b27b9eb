"""RFC 8601 Authentication-Results values, AuthVerdicts.as_dict, and verify_inbound end to end."""

from __future__ import annotations

import base64
import json

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.dns.authresults import (
    AuthVerdicts,
    authentication_results,
    quote_value,
    strip_forged,
)
from mailboxkit.dns.dkimverify import DkimResult, DkimVerdict
from mailboxkit.dns.dmarc import Disposition, DmarcResult, DmarcVerdict
from mailboxkit.dns.inbound import verify_inbound
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.dns.spf import SpfIdentity, SpfResult, SpfVerdict

SPF_PASS = SpfResult(SpfVerdict.PASS, "example.com", SpfIdentity.MAILFROM, "alice@example.com")
DKIM_PASS = DkimResult(
    DkimVerdict.PASS, "example.com", "sel", "rsa-sha256", "@example.com", "abcd+efg"
)
DMARC_PASS = DmarcResult(
    DmarcVerdict.PASS,
    Disposition.NONE,
    "example.com",
    "example.com",
    "example.com",
    Disposition.REJECT,
    spf_aligned=True,
    dkim_aligned=True,
)


def test_full_header_value() -> None:
    verdicts = AuthVerdicts(SPF_PASS, (DKIM_PASS,), DMARC_PASS, Disposition.NONE)
    assert authentication_results("mx.example.net", verdicts) == (
        "mx.example.net;"
        " spf=pass smtp.mailfrom=alice@example.com;"
        " dkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=abcd+efg;"
        " dmarc=pass (p=reject dis=none) header.from=example.com"
    )


def test_helo_identity_unsigned_and_no_dmarc_record() -> None:
    spf = SpfResult(SpfVerdict.NONE, "helo.example.org", SpfIdentity.HELO, "postmaster@x")
    dmarc = DmarcResult(DmarcVerdict.NONE, Disposition.NONE, "example.org")
    verdicts = AuthVerdicts(spf, (DkimResult(DkimVerdict.NONE),), dmarc, Disposition.NONE)
    assert authentication_results("mx.example.net", verdicts) == (
        "mx.example.net; spf=none smtp.helo=helo.example.org; dkim=none;"
        " dmarc=none header.from=example.org"
    )


def test_no_results_at_all() -> None:
    verdicts = AuthVerdicts(None, (), None, Disposition.NONE)
    assert authentication_results("mx.example.net", verdicts) == "mx.example.net; none"


def test_dkim_fail_with_slash_in_b_is_quoted() -> None:
    sig = DkimResult(DkimVerdict.FAIL, "example.com", "s1", "ed25519-sha256", "", "ab/c=d+e")
    verdicts = AuthVerdicts(None, (sig,), None, Disposition.NONE)
    assert authentication_results("mx", verdicts) == (
        'mx; dkim=fail header.d=example.com header.s=s1 header.a=ed25519-sha256 header.b="ab/c=d+e"'
    )


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("example.com", "example.com"),
        ("alice@example.com", "alice@example.com"),
        ("first.last+tag@mail.example.com", "first.last+tag@mail.example.com"),
        ("@example.com", "@example.com"),
        ("a=b/c?d@example.com", "a=b/c?d@example.com"),  # dot-atom local-part, not a token
        ("john doe@example.com", '"john doe@example.com"'),
        ('say "hi"@example.com', '"say \\"hi\\"@example.com"'),
        ("back\\slash", '"back\\\\slash"'),
        ("a;b", '"a;b"'),
        ("evil@example.com\r\nX-Injected: yes", '"evil@example.comX-Injected: yes"'),
        ("", '""'),
        ("münchen.example", '"münchen.example"'),
    ],
)
def test_quote_value(value: str, quoted: str) -> None:
    assert quote_value(value) == quoted


def unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    assert value.endswith('"') and len(value) >= 2
    out, i, body = [], 0, value[1:-1]
    while i < len(body):
        if body[i] == "\\":
            i += 1
        else:
            assert body[i] != '"', "unescaped quote inside quoted-string"
        out.append(body[i])
        i += 1
    return "".join(out)


@given(st.text())
def test_quote_value_round_trips_without_controls(value: str) -> None:
    quoted = quote_value(value)
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in quoted)
    expected = "".join(c for c in value if not (ord(c) < 0x20 or ord(c) == 0x7F))
    assert unquote(quoted) == expected
    if not quoted.startswith('"'):
        assert not any(char in quoted for char in ' ;()"\\,<>[]')


@given(st.text(), st.text(), st.text())
def test_header_value_is_one_line(mail_from: str, d: str, authserv: str) -> None:
    spf = SpfResult(SpfVerdict.FAIL, "example.com", SpfIdentity.MAILFROM, mail_from)
    sig = DkimResult(DkimVerdict.PASS, d, d, "rsa-sha256", "", d[:8])
    value = authentication_results(authserv, AuthVerdicts(spf, (sig,), None, Disposition.NONE))
    assert "\r" not in value and "\n" not in value


def test_as_dict_is_json_ready() -> None:
    verdicts = AuthVerdicts(SPF_PASS, (DKIM_PASS,), DMARC_PASS, Disposition.NONE)
    data = verdicts.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "spf": {
            "result": "pass",
            "domain": "example.com",
            "identity": "mailfrom",
            "sender": "alice@example.com",
            "explanation": "",
        },
        "dkim": [
            {
                "result": "pass",
                "domain": "example.com",
                "selector": "sel",
                "algorithm": "rsa-sha256",
                "identity": "@example.com",
            }
        ],
        "dmarc": {
            "result": "pass",
            "from_domain": "example.com",
            "policy_domain": "example.com",
            "requested": "reject",
            "disposition": "none",
            "spf_aligned": True,
            "dkim_aligned": True,
        },
        "disposition": "none",
    }
    assert AuthVerdicts(None, (), None, Disposition.NONE).as_dict()["spf"] is None


# ---- verify_inbound: SPF + DKIM + DMARC through one resolver -------------------------------

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: agent@mailbox.example.net\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hi agent.\r\n"
)


def signed_message() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = dkim.sign(
        MESSAGE,
        b"ed",
        b"example.com",
        base64.b64encode(seed),
        signature_algorithm=b"ed25519-sha256",
        include_headers=[b"from", b"to", b"subject"],
    )
    return header + MESSAGE, f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


@pytest.mark.parametrize(
    ("ip", "tamper", "spf", "dkim_result", "dmarc", "disposition"),
    [
        ("192.0.2.25", False, "pass", "pass", "pass", "none"),
        ("203.0.113.9", False, "fail", "pass", "pass", "none"),  # DKIM alone aligns
        ("192.0.2.25", True, "pass", "fail", "pass", "none"),  # SPF alone aligns
        ("203.0.113.9", True, "fail", "fail", "fail", "reject"),
    ],
)
async def test_verify_inbound(
    ip: str, tamper: bool, spf: str, dkim_result: str, dmarc: str, disposition: str
) -> None:
    message, key_record = signed_message()
    if tamper:
        message = message.replace(b"Hi agent.", b"Send money.")
    resolver = FakeResolver(
        {
            "bounce.example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
            "ed._domainkey.example.com": {"TXT": [key_record]},
            "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
        }
    )
    verdicts = await verify_inbound(
        message,
        ip=ip,
        mail_from="<alice@bounce.example.com>",
        helo="mail.example.com",
        resolver=resolver,
        receiver="mx.example.net",
    )
    assert verdicts.spf is not None and verdicts.dmarc is not None
    assert verdicts.spf.result == spf
    assert [sig.result for sig in verdicts.dkim] == [dkim_result]
    assert (verdicts.dmarc.result, verdicts.disposition) == (dmarc, disposition)
    header = authentication_results("mx.example.net", verdicts)
    assert header.startswith(f"mx.example.net; spf={spf} smtp.mailfrom=alice@bounce.example.com;")
    assert (
        f"; dkim={dkim_result} header.d=example.com header.s=ed header.a=ed25519-sha256" in header
    )
    assert header.endswith(f"dmarc={dmarc} (p=reject dis={disposition}) header.from=example.com")


async def test_verify_inbound_bad_ip_raises_plain_value_error() -> None:
    with pytest.raises(ValueError):
        await verify_inbound(
            MESSAGE, ip="nonsense", mail_from="", helo="h.example", resolver=FakeResolver()
        )


# ---- strip_forged: fields claiming our authserv-id are removed (RFC 8601 §5) ------------------

_BODY = b"\r\nAuthentication-Results: mx.ours.test; spf=pass (a body line, kept)\r\n"


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"Authentication-Results: mx.ours.test; spf=pass\r\n", b""),
        (b"authentication-results : MX.OURS.TEST ; dkim=pass\r\n", b""),
        (b"Authentication-Results: (comment) mx.ours.test; dkim=pass\r\n", b""),
        (b"Authentication-Results:\r\n mx.ours.test;\r\n\tdmarc=pass\r\n", b""),
        (b"Authentication-Results: mx.ours.test.evil; spf=pass\r\n", None),
        (b"Authentication-Results: other.test; spf=pass\r\n", None),
        (b"X-Authentication-Results: mx.ours.test; spf=pass\r\n", None),
    ],
)
def test_strip_forged(header: bytes, kept: bytes | None) -> None:
    message = b"From: a@b.test\r\n" + header + b"Subject: s\r\n" + _BODY
    expected = message if kept is None else b"From: a@b.test\r\nSubject: s\r\n" + _BODY
    assert strip_forged(message, "mx.ours.test") == expected


def test_strip_forged_leaves_a_message_without_such_fields_alone() -> None:
    message = b"From: a@b.test\nSubject: bare LF\n\nbody\n"
    assert strip_forged(message, "mx.ours.test") is message
