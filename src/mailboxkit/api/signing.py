"""Webhook signatures by the Standard Webhooks scheme (standardwebhooks.com, "Symmetric").

- A secret is ``whsec_`` followed by the base64 of 24 random bytes; the HMAC key is the
  decoded base64 part.
- Each request carries ``webhook-id`` (the event id, the same on every retry: receivers
  de-duplicate on it), ``webhook-timestamp`` (integer Unix seconds of this attempt) and
  ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per live
  secret separated by spaces (during a rotation the old secret signs too).
- The same three values go out as ``svix-id``, ``svix-timestamp`` and ``svix-signature`` so
  that Svix's verifier libraries work unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 24


class InvalidSecret(ValueError):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("not a whsec_ secret") from None
    if not key:
        raise InvalidSecret("empty secret")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``msg_id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    msg_id: str, timestamp: int, body: bytes, secrets_: Sequence[str]
) -> dict[str, str]:
    """The Standard Webhooks headers (and their ``svix-`` twins) for one request."""
    sig = " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)
    stamp = str(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": sig,
        "svix-id": msg_id,
        "svix-timestamp": stamp,
        "svix-signature": sig,
    }
