"""Per-domain DKIM keys: generation, selectors, key records and their storage.

Implementation notes:

- A domain gets a pair of keys: RSA 2048 (RFC 8301 §3.2 wants at least 1024 bits; 2048 is what
  receivers expect) and Ed25519 (RFC 8463). Mail is meant to be signed with both, since not every
  verifier knows Ed25519 (RFC 8463 §1).
- The key record (RFC 6376 §3.6.1) is `v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>`;
  for Ed25519, p= is the base64 of the raw 32-byte public key (RFC 8463 §4.2).
- Private keys are stored as unencrypted PKCS#8 PEM in `dkim_keys`: whoever reads the database
  can sign as the domain. `dkimpy_private_key` converts one to what dkimpy's signer takes.
- Selectors are `mbk<YYYYMMDD><r|e>` (RSA, Ed25519), with `-2`, `-3`... when a rotation on the
  same day finds them taken; selectors are never reused for a domain.
- Every active key is published; the newest active key of each algorithm signs
  (`signing_keys`). A rotation adds a pair and keeps the old one active until it is deactivated,
  so mail already in flight still verifies.
- Keys are generated outside the write transaction (RSA takes tens of milliseconds, and no
  transaction waits on CPU work); if another process stored keys meanwhile, its keys win.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailboxkit.dns.records import PublishedKey
from mailboxkit.store import models as m
from mailboxkit.store.accounts import ensure_domain
from mailboxkit.store.db import Database
from mailboxkit.store.ids import new_id

__all__ = [
    "DkimAlgorithm",
    "DkimKey",
    "GeneratedKey",
    "UnknownDomain",
    "deactivate_key",
    "dkimpy_private_key",
    "domain_keys",
    "ensure_keys",
    "generate_key",
    "key_record",
    "new_selector",
    "rotate_keys",
    "signing_keys",
]

RSA_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
SELECTOR_PREFIX = "mbk"


class DkimAlgorithm(StrEnum):
    """Key types (the k= tag) and the signing algorithm each is used with (a=)."""

    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def signature_algorithm(self) -> str:
        return "rsa-sha256" if self is DkimAlgorithm.RSA else "ed25519-sha256"

    @property
    def selector_suffix(self) -> str:
        return "r" if self is DkimAlgorithm.RSA else "e"


class UnknownDomain(LookupError):
    """The domain is not one of ours."""


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    algorithm: DkimAlgorithm
    public_txt: str
    private_key: str = field(repr=False)  # PKCS#8 PEM


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A stored key. `active` keys are published and may sign."""

    id: str
    domain: str
    selector: str
    algorithm: DkimAlgorithm
    public_txt: str
    created_at: datetime
    active: bool
    private_key: str = field(repr=False)

    @property
    def published(self) -> PublishedKey:
        return PublishedKey(self.selector, self.public_txt)


def generate_key(algorithm: DkimAlgorithm) -> GeneratedKey:
    """A new private key and its key record. CPU-bound for RSA: call it from a thread."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is DkimAlgorithm.RSA:
        private = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return GeneratedKey(algorithm, key_record(algorithm, public), pem.decode("ascii"))


def key_record(algorithm: DkimAlgorithm, public_key: bytes) -> str:
    """The TXT value publishing `public_key` (RFC 6376 §3.6.1, RFC 8463 §4.2)."""
    return f"v=DKIM1; k={algorithm}; p={base64.b64encode(public_key).decode('ascii')}"


def dkimpy_private_key(key: DkimKey | GeneratedKey) -> bytes:
    """The private key as dkimpy's `dkim.sign` takes it: PKCS#1 PEM for RSA, the base64
    32-byte seed for Ed25519."""
    private = serialization.load_pem_private_key(key.private_key.encode("ascii"), password=None)
    if isinstance(private, rsa.RSAPrivateKey):
        return private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if isinstance(private, ed25519.Ed25519PrivateKey):
        seed = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    raise ValueError(f"unexpected DKIM key type {type(private).__name__}")


def new_selector(algorithm: DkimAlgorithm, now: datetime, taken: Iterable[str]) -> str:
    """`mbk<YYYYMMDD><r|e>`, or with `-N` appended when that is taken."""
    base = f"{SELECTOR_PREFIX}{now:%Y%m%d}{algorithm.selector_suffix}"
    used = set(taken)
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def signing_keys(keys: Sequence[DkimKey]) -> list[DkimKey]:
    """The newest active key of each algorithm."""
    newest: dict[DkimAlgorithm, DkimKey] = {}
    for key in keys:
        if key.active and (
            key.algorithm not in newest
            or (key.created_at, key.selector)
            > (newest[key.algorithm].created_at, newest[key.algorithm].selector)
        ):
            newest[key.algorithm] = key
    return [newest[a] for a in DkimAlgorithm if a in newest]


async def domain_keys(
    conn: AsyncConnection, domain: str, *, include_inactive: bool = False
) -> list[DkimKey]:
    """The domain's keys, oldest first; none for an unknown domain."""
    query = (
        select(m.dkim_keys, m.domains.c.name)
        .join(m.domains, m.domains.c.id == m.dkim_keys.c.domain_id)
        .where(m.domains.c.name == domain)
        .order_by(m.dkim_keys.c.created_at, m.dkim_keys.c.selector)
    )
    if not include_inactive:
        query = query.where(m.dkim_keys.c.active.is_(True))
    rows = (await conn.execute(query)).all()
    return [
        DkimKey(
            id=row.id,
            domain=row.name,
            selector=row.selector,
            algorithm=DkimAlgorithm(row.algorithm),
            public_txt=row.public_txt,
            created_at=row.created_at,
            active=row.active,
            private_key=row.private_key,
        )
        for row in rows
    ]


async def _generate_pair() -> list[GeneratedKey]:
    return await asyncio.to_thread(lambda: [generate_key(a) for a in DkimAlgorithm])


async def _store(
    conn: AsyncConnection, domain_id: str, keys: Sequence[GeneratedKey], now: datetime
) -> set[str]:
    """Insert `keys` under fresh selectors; returns those selectors."""
    taken = set(
        (
            await conn.scalars(
                select(m.dkim_keys.c.selector).where(m.dkim_keys.c.domain_id == domain_id)
            )
        ).all()
    )
    rows = []
    for key in keys:
        selector = new_selector(key.algorithm, now, taken)
        taken.add(selector)
        rows.append(
            {
                "id": new_id(),
                "domain_id": domain_id,
                "selector": selector,
                "algorithm": str(key.algorithm),
                "private_key": key.private_key,
                "public_txt": key.public_txt,
                "created_at": now,
                "active": True,
            }
        )
    await conn.execute(insert(m.dkim_keys), rows)
    return {str(row["selector"]) for row in rows}


async def ensure_keys(
    db: Database, domain: str, *, now: datetime, create_domain: bool = True
) -> list[DkimKey]:
    """The domain's active keys, making a key pair if it has none, and the domain itself
    (unverified, the operator's) if absent. With ``create_domain=False`` an absent domain is
    :class:`UnknownDomain` instead (the API: a domain deleted meanwhile stays deleted)."""
    async with db.read() as conn:
        keys = await domain_keys(conn, domain)
    if keys:
        return keys
    generated = await _generate_pair()
    async with db.write() as conn:
        if create_domain:
            domain_id = await ensure_domain(conn, domain, now=now)
        else:
            found = await conn.scalar(select(m.domains.c.id).where(m.domains.c.name == domain))
            if found is None:
                raise UnknownDomain(domain)
            domain_id = str(found)
        keys = await domain_keys(conn, domain)
        if keys:  # another process was quicker
            return keys
        await _store(conn, domain_id, generated, now)
        return await domain_keys(conn, domain)


async def rotate_keys(db: Database, domain: str, *, now: datetime) -> list[DkimKey]:
    """Add a new key pair under new selectors and return it; the old keys stay active."""
    generated = await _generate_pair()
    async with db.write() as conn:
        domain_id = await conn.scalar(select(m.domains.c.id).where(m.domains.c.name == domain))
        if domain_id is None:
            raise UnknownDomain(domain)
        selectors = await _store(conn, str(domain_id), generated, now)
        keys = await domain_keys(conn, domain)
    return [key for key in keys if key.selector in selectors]


async def deactivate_key(conn: AsyncConnection, domain: str, selector: str) -> bool:
    """Stop publishing and signing with a selector; False if it was not an active key."""
    domain_id = select(m.domains.c.id).where(m.domains.c.name == domain).scalar_subquery()
    result = await conn.execute(
        update(m.dkim_keys)
        .where(
            m.dkim_keys.c.domain_id == domain_id,
            m.dkim_keys.c.selector == selector,
            m.dkim_keys.c.active.is_(True),
        )
        .values(active=False)
    )
    return bool(result.rowcount)
