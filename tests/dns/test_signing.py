"""DKIM signing of outgoing mail: RSA and Ed25519 signatures that dkimpy verifies against the
records ``dns.records`` publishes; key cache and rotation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import pytest
from dkim.util import parse_tag_value

from mailboxkit.dns.dkimkeys import domain_keys, rotate_keys
from mailboxkit.dns.records import DomainProfile, RecordPurpose, domain_records
from mailboxkit.dns.signing import DkimSigner
from mailboxkit.store.db import Database

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
MESSAGE = (
    b"From: Bot <bot@example.test>\r\nTo: alice@remote.test\r\nSubject: Hi\r\n"
    b"Date: Sat, 28 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello there.\r\n"
)


class Clock:
    def now(self) -> datetime:
        return NOW


async def published(db: Database, domain: str) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook answering from the records we tell the operator to publish."""
    async with db.read() as conn:
        keys = await domain_keys(conn, domain)
    profile = DomainProfile(domain, "mx.example.test", tuple(k.published for k in keys))
    txt = {
        f"{r.name}.": r.value.encode()
        for r in domain_records(profile)
        if r.purpose is RecordPurpose.DKIM
    }

    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        return txt.get(name.decode() if isinstance(name, bytes) else name)

    return lookup


def signatures(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature, top first."""
    parsed = dkim.DKIM(message)
    return [parse_tag_value(v) for n, v in parsed.headers if n.lower() == b"dkim-signature"]


def verifies(message: bytes, index: int, lookup: Callable[..., bytes | None]) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(index, dnsfunc=lookup))
    except dkim.ValidationError:
        return False


async def test_both_signatures_verify_against_the_published_records(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        signer = DkimSigner(db, Clock())
        signed = await signer.sign(MESSAGE, "Example.Test")
        lookup = await published(db, "example.test")
    finally:
        await db.close()
    assert signed.endswith(MESSAGE)
    tags = signatures(signed)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    assert all(t[b"d"] == b"example.test" for t in tags)
    assert all(t[b"h"].replace(b" ", b"").split(b":").count(b"from") == 2 for t in tags)
    checker = dkim.DKIM(signed)
    assert checker.verify(0, dnsfunc=lookup)
    assert checker.verify(1, dnsfunc=lookup)
    tampered = signed.replace(b"Hello there.", b"Hello thera.")
    assert not verifies(tampered, 0, lookup)
    assert not verifies(tampered, 1, lookup)


async def test_a_rotation_signs_with_the_new_keys_once_the_cache_expires(
    database_url: str,
) -> None:
    db = Database.open(database_url)
    ticks = [0.0]
    try:
        signer = DkimSigner(db, Clock(), cache_ttl=60, monotonic=lambda: ticks[0])
        before = {t[b"s"] for t in signatures(await signer.sign(MESSAGE, "example.test"))}
        new = await rotate_keys(db, "example.test", now=NOW)
        ticks[0] = 30
        cached = {t[b"s"] for t in signatures(await signer.sign(MESSAGE, "example.test"))}
        ticks[0] = 61
        after = {t[b"s"] for t in signatures(await signer.sign(MESSAGE, "example.test"))}
    finally:
        await db.close()
    assert cached == before
    assert after == {k.selector.encode() for k in new}
    assert not after & before


@pytest.mark.parametrize("body", [b"", b"x" * 100_000 + b"\r\n", "żółć\r\n".encode()])
async def test_bodies_of_any_size_and_charset_verify(database_url: str, body: bytes) -> None:
    db = Database.open(database_url)
    try:
        head = MESSAGE.split(b"\r\n\r\n")[0]
        signed = await DkimSigner(db, Clock()).sign(head + b"\r\n\r\n" + body, "example.test")
        lookup = await published(db, "example.test")
    finally:
        await db.close()
    assert dkim.DKIM(signed).verify(0, dnsfunc=lookup)
    assert dkim.DKIM(signed).verify(1, dnsfunc=lookup)
