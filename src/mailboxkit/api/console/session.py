"""The console's session: the user's API key sealed in a cookie, and the CSRF token of it.

Implementation notes:

- The cookie holds ``nonce ‖ AES-256-GCM(key, {"k": api_key, "exp": unix seconds})``, base64url,
  the associated data naming its purpose and version. The server keeps no session table: any
  process holding the install's secret opens it, and a restart ends no session. Tampering
  fails the GCM tag; the expiry inside the sealed value is checked against the server's clock,
  so a cookie replayed after its Max-Age is refused too.
- The key is the API's own credential: every page calls the API with it, so a key revoked
  anywhere ends its session at the next page (401), and the console can never do more than
  the key could.
- The sealing and CSRF keys are derived (HKDF-SHA256, one label each) from the server's secret
  (``MAILBOXKIT_SECRET_KEY``, else the one generated into the data dir), which survives
  restarts and differs per install; neither is ever used for anything else.
- The CSRF token is an HMAC of the whole cookie value: it changes with every sign-in, needs no
  storage, and a page of another origin can neither read the cookie nor make the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "mbk_console"
LIFETIME = timedelta(hours=12)
NONCE_BYTES = 12
MAX_COOKIE_CHARS = 1024  # a sealed key is about 150; larger is not ours
_AAD = b"mailboxkit console session v1"


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user: the account API key they gave, and when the session ends."""

    api_key: str
    expires_at: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys sessions are sealed and CSRF tokens made with, from the server's secret."""

    seal_key: bytes
    csrf_key: bytes

    @classmethod
    def derive(cls, secret: bytes) -> SessionKeys:
        """Keys for ``secret``; a random secret (sessions end with the process) when empty."""
        secret = secret or os.urandom(32)
        return cls(
            _derive(secret, b"mailboxkit console session seal"),
            _derive(secret, b"mailboxkit console csrf"),
        )

    def seal(self, api_key: str, now: datetime) -> str:
        """A cookie value for a session of ``api_key`` from ``now`` on."""
        expires = int((now + LIFETIME).timestamp())
        plain = json.dumps({"k": api_key, "exp": expires}, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        return _b64encode(nonce + AESGCM(self.seal_key).encrypt(nonce, plain, _AAD))

    def open(self, cookie: str, now: datetime) -> Session | None:
        """The session ``cookie`` holds, or None when it is not ours, altered or expired."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        try:
            sealed = _b64decode(cookie)
            plain = AESGCM(self.seal_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _AAD)
            value = json.loads(plain)
            session = Session(str(value["k"]), int(value["exp"]))
        except (InvalidTag, ValueError, binascii.Error, KeyError, TypeError):
            return None
        return session if now.timestamp() < session.expires_at else None

    def csrf_token(self, cookie: str) -> str:
        """The token every form of the session ``cookie`` carries."""
        return _b64encode(hmac.new(self.csrf_key, cookie.encode(), hashlib.sha256).digest())

    def csrf_valid(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(cookie).encode(), token.encode())
