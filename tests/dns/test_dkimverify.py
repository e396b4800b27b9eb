"""DKIM verification: messages signed by dkimpy (RSA-2048, Ed25519), keys from FakeResolver."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailboxkit.dns.dkimverify import DkimResult, DkimVerdict, verify_dkim
from mailboxkit.dns.resolver import FakeResolver

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe numbers are in.\r\n"
)
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True)
class Key:
    private: bytes  # what dkim.sign wants
    record: str  # the TXT record at <selector>._domainkey.<domain>
    algorithm: bytes


def rsa_key(bits: int = 2048) -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}", b"rsa-sha256")


def ed25519_key() -> Key:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    record = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    return Key(base64.b64encode(seed), record, b"ed25519-sha256")


@pytest.fixture(scope="module")
def rsa2048() -> Key:
    return rsa_key()


@pytest.fixture(scope="module")
def ed() -> Key:
    return ed25519_key()


def sign(
    message: bytes,
    key: Key,
    selector: str = "sel",
    domain: str = "example.com",
    algorithm: bytes | None = None,
) -> bytes:
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private,
        signature_algorithm=algorithm or key.algorithm,
        include_headers=SIGNED_HEADERS,
    )
    return header + message


async def test_rsa_2048_pass(rsa2048: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    [result] = await verify_dkim(sign(MESSAGE, rsa2048), resolver)
    assert result.result is DkimVerdict.PASS, result.detail
    assert (result.domain, result.selector, result.algorithm) == (
        "example.com",
        "sel",
        "rsa-sha256",
    )
    assert result.identity == "@example.com"
    assert len(result.signature_prefix) == 8
    assert resolver.queries == [("sel._domainkey.example.com", "TXT")]


async def test_ed25519_pass(ed: Key) -> None:
    resolver = FakeResolver({"ed._domainkey.example.org": {"TXT": [ed.record]}})
    [result] = await verify_dkim(sign(MESSAGE, ed, "ed", "example.org"), resolver)
    assert result.result is DkimVerdict.PASS, result.detail
    assert (result.domain, result.selector, result.algorithm) == (
        "example.org",
        "ed",
        "ed25519-sha256",
    )


async def test_every_signature_is_verified_in_header_order(rsa2048: Key, ed: Key) -> None:
    resolver = FakeResolver(
        {
            "sel._domainkey.example.com": {"TXT": [rsa2048.record]},
            "ed._domainkey.example.com": {"TXT": [ed.record]},
            "gone._domainkey.example.net": {},
        }
    )
    message = sign(sign(sign(MESSAGE, rsa2048), ed, "ed"), rsa2048, "gone", "example.net")
    results = await verify_dkim(message, resolver)
    assert [(r.selector, r.result) for r in results] == [
        ("gone", DkimVerdict.PERMERROR),  # the topmost field was added last
        ("ed", DkimVerdict.PASS),
        ("sel", DkimVerdict.PASS),
    ]


async def test_one_key_lookup_per_key_name(rsa2048: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    results = await verify_dkim(sign(sign(MESSAGE, rsa2048), rsa2048), resolver)
    assert [r.result for r in results] == [DkimVerdict.PASS, DkimVerdict.PASS]
    assert resolver.count == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"the numbers are in.", b"the numbers are out."),  # body: bh= mismatch
        (b"Subject: quarterly numbers", b"Subject: quarterly Numbers"),  # signed header
        (b"To: bob@example.net", b"To: eve@example.net"),
    ],
)
@pytest.mark.parametrize("keyname", ["rsa", "ed25519"])
async def test_altered_after_signing_fails(
    rsa2048: Key, ed: Key, keyname: str, old: bytes, new: bytes
) -> None:
    key = rsa2048 if keyname == "rsa" else ed
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [key.record]}})
    signed = sign(MESSAGE, key)
    assert old in signed
    [result] = await verify_dkim(signed.replace(old, new), resolver)
    assert result.result is DkimVerdict.FAIL, result.detail


async def test_unsigned_header_may_change(rsa2048: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    signed = b"Received: from somewhere\r\n" + sign(MESSAGE, rsa2048)
    [result] = await verify_dkim(signed, resolver)
    assert result.result is DkimVerdict.PASS


@pytest.mark.parametrize(
    ("records", "servfail", "expected"),
    [
        ({}, [], DkimVerdict.PERMERROR),  # NXDOMAIN: no key
        ({"sel._domainkey.example.com": {"A": ["192.0.2.1"]}}, [], DkimVerdict.PERMERROR),
        ({}, ["sel._domainkey.example.com"], DkimVerdict.TEMPERROR),
        (
            {"sel._domainkey.example.com": {"TXT": ["v=DKIM1; k=rsa; p="]}},
            [],
            DkimVerdict.PERMERROR,
        ),
        ({"sel._domainkey.example.com": {"TXT": ["v=DKIM1; p=!!!"]}}, [], DkimVerdict.PERMERROR),
        ({"sel._domainkey.example.com": {"TXT": ["v=DKIM2; p=AAAA"]}}, [], DkimVerdict.PERMERROR),
        ({"sel._domainkey.example.com": {"TXT": ["garbage"]}}, [], DkimVerdict.PERMERROR),
    ],
    ids=["nxdomain", "nodata", "servfail", "revoked", "bad-base64", "bad-version", "garbage"],
)
async def test_key_problems(
    rsa2048: Key,
    records: dict[str, dict[str, list[str]]],
    servfail: list[str],
    expected: DkimVerdict,
) -> None:
    resolver = FakeResolver(records, servfail=servfail)  # type: ignore[arg-type]
    [result] = await verify_dkim(sign(MESSAGE, rsa2048), resolver)
    assert result.result is expected, result.detail


async def test_key_type_must_match_algorithm(rsa2048: Key, ed: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    [result] = await verify_dkim(sign(MESSAGE, ed), resolver)
    assert result.result is DkimVerdict.PERMERROR


async def test_rsa_key_below_minimum_is_permerror() -> None:
    key = rsa_key(1024)
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [key.record]}})
    signed = sign(MESSAGE, key)
    [ok] = await verify_dkim(signed, resolver)
    assert ok.result is DkimVerdict.PASS
    [result] = await verify_dkim(signed, resolver, min_rsa_bits=2048)
    assert result.result is DkimVerdict.PERMERROR, result.detail


async def test_rsa_sha1_is_refused_by_policy(rsa2048: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    [result] = await verify_dkim(sign(MESSAGE, rsa2048, algorithm=b"rsa-sha1"), resolver)
    assert (result.result, result.algorithm) == (DkimVerdict.POLICY, "rsa-sha1")


@pytest.mark.parametrize(
    "field",
    [
        b"DKIM-Signature: garbage\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; b=AAAA\r\n",  # no bh=
        b"DKIM-Signature: v=1; a=rsa-md5; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA\r\n",
        b"DKIM-Signature: v=2; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA\r\n",
    ],
    ids=["not-a-tag-list", "missing-bh", "unknown-algorithm", "bad-version"],
)
async def test_malformed_signature_field_is_neutral(field: bytes) -> None:
    resolver = FakeResolver()
    [result] = await verify_dkim(field + MESSAGE, resolver)
    assert result.result is DkimVerdict.NEUTRAL, result.detail


async def test_unsigned_message_is_none() -> None:
    assert await verify_dkim(MESSAGE, FakeResolver()) == [
        DkimResult(DkimVerdict.NONE, detail="message is not signed")
    ]


async def test_lf_line_endings(rsa2048: Key) -> None:
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [rsa2048.record]}})
    signed = sign(MESSAGE, rsa2048).replace(b"\r\n", b"\n")
    [result] = await verify_dkim(signed, resolver)
    assert result.result is DkimVerdict.PASS, result.detail
