"""DKIM verification (RFC 6376, RFC 8463 Ed25519, RFC 8301) with dkimpy, keys via our resolver.

Implementation notes:

- dkimpy's `dnsfunc` is synchronous, so each signature's key record (s._domainkey.d, RFC 6376
  §3.6.2.1) is fetched first, concurrently, through the async `Resolver`; dkimpy then runs in a
  worker thread (RSA is CPU work) with a dnsfunc that only reads what was prefetched.
- Results per signature follow RFC 8601 §2.7.1: pass; fail (bad body hash or signature);
  neutral (the DKIM-Signature field itself is malformed); policy (rsa-sha1, which RFC 8301 §3.1
  says verifiers must not accept); temperror (key lookup failed temporarily); permerror (no key,
  revoked or unparsable key, key type or size unacceptable). An unsigned message gives one
  `none` result.
- The key's TXT strings are joined (RFC 6376 §3.6.2.2); with several TXT records the first is
  used, as dkimpy does.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import dkim  # type: ignore[import-untyped]
import dkim.util  # type: ignore[import-untyped]

from mailboxkit.dns.resolver import DnsNotFound, DnsTempError, Resolver

__all__ = ["DkimResult", "DkimVerdict", "verify_dkim"]

log = logging.getLogger(__name__)

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must not accept smaller RSA keys


class DkimVerdict(StrEnum):
    """Per-signature DKIM results (RFC 8601 §2.7.1)."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: DkimVerdict
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    signature_prefix: str = ""  # first 8 characters of b=, RFC 6008 header.b
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Signature:
    index: int
    tags: Mapping[bytes, bytes] | None  # None: the field is not a valid tag-list
    error: str = ""

    def tag(self, name: bytes) -> str:
        value = (self.tags or {}).get(name, b"")
        return re.sub(r"\s+", "", value.decode("ascii", "replace"))

    @property
    def key_name(self) -> str:
        return f"{self.tag(b's')}._domainkey.{self.tag(b'd')}"

    def result(self, verdict: DkimVerdict, detail: str) -> DkimResult:
        return DkimResult(
            verdict,
            domain=self.tag(b"d").lower(),
            selector=self.tag(b"s"),
            algorithm=self.tag(b"a").lower(),
            identity=self.tag(b"i"),
            signature_prefix=self.tag(b"b")[:8],
            detail=detail,
        )


async def verify_dkim(
    message: bytes, resolver: Resolver, *, min_rsa_bits: int = MIN_RSA_BITS
) -> list[DkimResult]:
    """Verify every DKIM-Signature of `message`, in header order."""
    signatures = _signatures(message)
    if not signatures:
        return [DkimResult(DkimVerdict.NONE, detail="message is not signed")]
    names = sorted({sig.key_name for sig in signatures if sig.tags is not None})
    fetched = await asyncio.gather(*(_fetch_key(resolver, name) for name in names))
    keys = dict(zip(names, fetched, strict=True))
    return await asyncio.to_thread(_verify_all, message, signatures, keys, min_rsa_bits)


def _signatures(message: bytes) -> list[_Signature]:
    """The DKIM-Signature fields, parsed as tag-lists (RFC 6376 §3.2, §3.5)."""
    try:
        headers, _ = dkim.rfc822_parse(message)
    except dkim.DKIMException:
        return []
    signatures = []
    fields = [value for name, value in headers if name.lower() == b"dkim-signature"]
    for index, value in enumerate(fields):
        try:
            signatures.append(_Signature(index, dkim.util.parse_tag_value(value)))
        except dkim.util.InvalidTagValueList as exc:
            signatures.append(_Signature(index, None, f"malformed tag-list: {exc}"))
    return signatures


async def _fetch_key(resolver: Resolver, name: str) -> str | DkimVerdict:
    """The key record's text, or the verdict its absence gives (RFC 6376 §6.1.2)."""
    try:
        records = await resolver.txt(name)
    except DnsNotFound:
        return DkimVerdict.PERMERROR
    except DnsTempError:
        return DkimVerdict.TEMPERROR
    return records[0] if records else DkimVerdict.PERMERROR


def _verify_all(
    message: bytes,
    signatures: Sequence[_Signature],
    keys: Mapping[str, str | DkimVerdict],
    min_rsa_bits: int,
) -> list[DkimResult]:
    """The CPU part, run in a worker thread."""
    return [_verify_one(message, sig, keys, min_rsa_bits) for sig in signatures]


def _verify_one(
    message: bytes,
    sig: _Signature,
    keys: Mapping[str, str | DkimVerdict],
    min_rsa_bits: int,
) -> DkimResult:
    if sig.tags is None:
        return sig.result(DkimVerdict.NEUTRAL, sig.error)
    verifier = dkim.DKIM(message, logger=log, minkey=min_rsa_bits)
    try:
        verifier.verify_headerprep(sig.index)  # RFC 6376 §6.1.1: required tags and values
    except dkim.DKIMException as exc:
        return sig.result(DkimVerdict.NEUTRAL, f"bad signature field: {exc}")
    if sig.tag(b"a").lower() == "rsa-sha1":
        return sig.result(DkimVerdict.POLICY, "rsa-sha1 is not accepted (RFC 8301 §3.1)")
    key = keys.get(sig.key_name, DkimVerdict.PERMERROR)
    if key is DkimVerdict.TEMPERROR:
        return sig.result(key, f"key lookup for {sig.key_name} failed")
    if isinstance(key, DkimVerdict):
        return sig.result(key, f"no key at {sig.key_name}")
    try:
        _, _, key_type, _ = dkim.evaluate_pk(sig.key_name.encode(), key.encode())
    except (dkim.DKIMException, ValueError) as exc:
        return sig.result(DkimVerdict.PERMERROR, f"unusable key at {sig.key_name}: {exc}")
    key_kind = key_type.decode()
    if not sig.tag(b"a").lower().startswith(key_kind + "-"):  # RFC 6376 §3.6.1 k=
        return sig.result(DkimVerdict.PERMERROR, f"a= does not match the {key_kind} key")

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return key.encode()

    try:
        valid = bool(verifier.verify(idx=sig.index, dnsfunc=dnsfunc))
    except dkim.KeyFormatError as exc:  # e.g. RSA key under min_rsa_bits, RFC 8301 §3.2
        return sig.result(DkimVerdict.PERMERROR, str(exc))
    except (dkim.ValidationError, dkim.MessageFormatError) as exc:  # body hash mismatch
        return sig.result(DkimVerdict.FAIL, str(exc))
    except dkim.DKIMException as exc:
        return sig.result(DkimVerdict.PERMERROR, str(exc))
    if valid:
        return sig.result(DkimVerdict.PASS, "good signature")
    return sig.result(DkimVerdict.FAIL, "signature does not verify")
