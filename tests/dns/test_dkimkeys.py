"""DKIM key generation, key records that verifiers accept, selectors, storage and rotation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailboxkit.dns import dkimkeys
from mailboxkit.dns.dkimkeys import DkimAlgorithm, DkimKey, new_selector, signing_keys
from mailboxkit.dns.dkimverify import DkimVerdict, verify_dkim
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store.db import Database

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
MESSAGE = (
    b"From: Bot <bot@example.com>\r\nTo: you@example.net\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nHello.\r\n"
)


def _tags(txt: str) -> dict[str, str]:
    return dict(part.strip().split("=", 1) for part in txt.split(";"))


def test_rsa_key_record_is_a_2048_bit_subject_public_key_info() -> None:
    key = dkimkeys.generate_key(DkimAlgorithm.RSA)
    tags = _tags(key.public_txt)
    assert (tags["v"], tags["k"]) == ("DKIM1", "rsa")
    public = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert key.private_key.startswith("-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE" not in repr(key)


def test_ed25519_key_record_is_the_raw_public_key() -> None:
    key = dkimkeys.generate_key(DkimAlgorithm.ED25519)
    tags = _tags(key.public_txt)
    assert (tags["v"], tags["k"]) == ("DKIM1", "ed25519")
    assert len(base64.b64decode(tags["p"])) == 32  # RFC 8463 §4.2


@pytest.mark.parametrize("algorithm", list(DkimAlgorithm))
async def test_mail_signed_with_a_new_key_verifies_against_its_record(
    algorithm: DkimAlgorithm,
) -> None:
    key = dkimkeys.generate_key(algorithm)
    signature = dkim.sign(
        MESSAGE,
        b"sel",
        b"example.com",
        dkimkeys.dkimpy_private_key(key),
        signature_algorithm=algorithm.signature_algorithm.encode(),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    resolver = FakeResolver({"sel._domainkey.example.com": {"TXT": [key.public_txt]}})
    (result,) = await verify_dkim(signature + MESSAGE, resolver)
    assert result.result is DkimVerdict.PASS, result.detail


@pytest.mark.parametrize(
    ("algorithm", "taken", "expected"),
    [
        (DkimAlgorithm.RSA, [], "mbk20261127r"),
        (DkimAlgorithm.ED25519, [], "mbk20261127e"),
        (DkimAlgorithm.RSA, ["mbk20261127e"], "mbk20261127r"),
        (DkimAlgorithm.RSA, ["mbk20261127r"], "mbk20261127r-2"),
        (DkimAlgorithm.RSA, ["mbk20261127r", "mbk20261127r-2"], "mbk20261127r-3"),
    ],
)
def test_new_selector(algorithm: DkimAlgorithm, taken: list[str], expected: str) -> None:
    assert new_selector(algorithm, NOW, taken) == expected


def _key(selector: str, algorithm: DkimAlgorithm, age_days: int, active: bool = True) -> DkimKey:
    created = NOW - timedelta(days=age_days)
    return DkimKey("id", "example.com", selector, algorithm, "txt", created, active, "pem")


def test_the_newest_active_key_of_each_algorithm_signs() -> None:
    keys = [
        _key("old-r", DkimAlgorithm.RSA, 30),
        _key("old-e", DkimAlgorithm.ED25519, 30),
        _key("new-r", DkimAlgorithm.RSA, 1),
        _key("off-e", DkimAlgorithm.ED25519, 0, active=False),
    ]
    assert [k.selector for k in signing_keys(keys)] == ["new-r", "old-e"]


async def test_keys_are_made_once_rotated_and_deactivated(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        first = await dkimkeys.ensure_keys(db, "example.com", now=NOW)
        assert sorted((k.selector, k.algorithm) for k in first) == [
            ("mbk20261127e", DkimAlgorithm.ED25519),
            ("mbk20261127r", DkimAlgorithm.RSA),
        ]
        again = await dkimkeys.ensure_keys(db, "example.com", now=NOW + timedelta(days=1))
        assert again == first

        later = NOW + timedelta(days=40)
        new = await dkimkeys.rotate_keys(db, "example.com", now=later)
        assert sorted(k.selector for k in new) == ["mbk20270106e", "mbk20270106r"]
        same_day = await dkimkeys.rotate_keys(db, "example.com", now=later)
        assert sorted(k.selector for k in same_day) == ["mbk20270106e-2", "mbk20270106r-2"]

        async with db.read() as conn:
            keys = await dkimkeys.domain_keys(conn, "example.com")
        assert len(keys) == 6  # the old ones stay published
        assert {k.selector for k in signing_keys(keys)} == {k.selector for k in same_day}

        async with db.write() as conn:
            assert await dkimkeys.deactivate_key(conn, "example.com", "mbk20261127r")
            assert not await dkimkeys.deactivate_key(conn, "example.com", "mbk20261127r")
            assert not await dkimkeys.deactivate_key(conn, "example.org", "mbk20261127e")
        async with db.read() as conn:
            active = {k.selector for k in await dkimkeys.domain_keys(conn, "example.com")}
            every = await dkimkeys.domain_keys(conn, "example.com", include_inactive=True)
        assert "mbk20261127r" not in active and len(active) == 5
        assert len(every) == 6
        assert all(k.created_at.tzinfo is not None for k in every)
    finally:
        await db.close()


async def test_rotating_an_unknown_domain_fails(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        with pytest.raises(dkimkeys.UnknownDomain):
            await dkimkeys.rotate_keys(db, "nowhere.example", now=NOW)
    finally:
        await db.close()
