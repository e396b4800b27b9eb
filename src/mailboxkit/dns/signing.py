"""DKIM signing of outgoing mail with the domain's RSA and Ed25519 keys (RFC 6376, RFC 8463).

Implementation notes:

- Every message is signed twice, once per algorithm, with the newest active key of each
  (``dkimkeys.signing_keys``); not every verifier knows Ed25519 (RFC 8463 §1). Both signatures
  cover the message as given, and neither covers the other (DKIM-Signature is never in h=).
- Canonicalization is relaxed/simple (dkimpy's default): header whitespace may be refolded on
  the way, the body must arrive as sent. The headers signed are dkimpy's defaults, RFC 6376
  §5.4.1's recommended list as present in the message, with From signed once more than it
  occurs so that no From can be added (RFC 6376 §8.15).
- dkimpy computes RSA signatures in pure Python (about 9 ms for 2048 bits). The private-key
  operation alone is done by ``cryptography`` (OpenSSL, well under 1 ms) in
  :class:`_DkimWithOpenSsl`; header selection, canonicalization, the tag list and folding stay
  dkimpy's, and the tests verify every signature with dkimpy's verifier.
- Keys are read (and made, for a domain that has none) through ``dkimkeys.ensure_keys`` and
  kept for ``cache_ttl`` seconds, so a rotation is picked up within that time. Signing runs in
  a thread: it is CPU work and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailboxkit.dns.dkimkeys import DkimAlgorithm, DkimKey, dkimpy_private_key, ensure_keys
from mailboxkit.dns.dkimkeys import signing_keys as newest_keys
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database

__all__ = ["DkimSigner", "SigningKey", "prepare_key", "sign_message"]

DEFAULT_CACHE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key ready to sign: its selector and the private key in the forms signing needs."""

    selector: str
    algorithm: DkimAlgorithm
    dkimpy_key: bytes = field(repr=False)
    rsa_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)


def prepare_key(key: DkimKey) -> SigningKey:
    """Parse a stored key once, for many signatures."""
    rsa_key = None
    if key.algorithm is DkimAlgorithm.RSA:
        loaded = serialization.load_pem_private_key(key.private_key.encode("ascii"), None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"DKIM key {key.selector} of {key.domain} is not an RSA key")
        rsa_key = loaded
    return SigningKey(key.selector, key.algorithm, dkimpy_private_key(key), rsa_key)


class _DkimWithOpenSsl(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer with the RSA private-key operation done by OpenSSL.

    ``gen_header`` follows dkimpy 1.1's own step by step; only the line computing ``b=`` for
    ``rsa-sha256`` differs (RFC 8017 §8.2.1 RSASSA-PKCS1-v1_5 over the SHA-256 digest, which
    is what dkimpy computes by hand).
    """

    rsa_key: rsa.RSAPrivateKey | None = None

    def gen_header(
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: Sequence[bytes],
        canon_policy: Any,
        header_name: bytes,
        pk: Any,
        standardize: bool = False,
    ) -> bytes:
        if self.signature_algorithm != b"rsa-sha256" or self.rsa_key is None or standardize:
            value: bytes = super().gen_header(
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
            return value
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        hasher = self.hasher()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            hasher, canon_policy, headers, include_headers, header, dict(fields)
        )
        signature = self.rsa_key.sign(
            hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )
        index = next(i for i, (tag, _) in enumerate(fields) if tag == b"b")
        fields[index] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        folded: bytes = dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)
        return folded


def sign_message(message: bytes, domain: str, keys: Sequence[SigningKey]) -> bytes:
    """``message`` with one DKIM-Signature per key prepended (the first key's on top).

    ``message`` uses CRLF line endings. Pure CPU work: call it from a thread in async code.
    """
    signer = _DkimWithOpenSsl(message)
    headers: list[bytes] = []
    for key in keys:
        signer.rsa_key = key.rsa_key
        headers.append(
            signer.sign(
                key.selector.encode("ascii"),
                domain.encode("ascii"),
                key.dkimpy_key,
                signature_algorithm=key.algorithm.signature_algorithm.encode("ascii"),
            )
        )
    return b"".join(headers) + message


class DkimSigner:
    """Signs outgoing messages for our domains, keys cached for ``cache_ttl`` seconds."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._clock = clock
        self._ttl = cache_ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, tuple[SigningKey, ...]]] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    async def keys(self, domain: str) -> tuple[SigningKey, ...]:
        """The keys that sign for ``domain`` now (made on first use)."""
        domain = domain.rstrip(".").lower()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        lock = self._loading.setdefault(domain, asyncio.Lock())
        async with lock:
            hit = self._cache.get(domain)
            if hit is not None and hit[0] > self._monotonic():
                return hit[1]
            stored = await ensure_keys(self._db, domain, now=self._clock.now())
            prepared = tuple(prepare_key(k) for k in newest_keys(stored))
            self._cache[domain] = (self._monotonic() + self._ttl, prepared)
            return prepared

    async def sign(self, message: bytes, domain: str) -> bytes:
        """``message`` with the domain's DKIM signatures prepended."""
        keys = await self.keys(domain)
        return await asyncio.to_thread(sign_message, message, domain.rstrip(".").lower(), keys)
