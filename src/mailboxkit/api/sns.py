"""Amazon SNS messages over HTTP(S): parsing, signature verification, subscription confirmation.

Implementation notes (AWS, "Verifying the signatures of Amazon SNS messages"):

- The body is JSON (sent as ``text/plain``). The signed string is ``Name\\nValue\\n`` for a
  fixed list of fields in byte order of their names: for ``Notification`` ``Message``,
  ``MessageId``, ``Subject`` (only when present), ``Timestamp``, ``TopicArn``, ``Type``; for
  ``SubscriptionConfirmation`` and ``UnsubscribeConfirmation`` ``Message``, ``MessageId``,
  ``SubscribeURL``, ``Timestamp``, ``Token``, ``TopicArn``, ``Type``.
- ``Signature`` is base64 RSA PKCS #1 v1.5 over that string: SHA-1 for ``SignatureVersion``
  1, SHA-256 for 2. The key is in the X.509 certificate at ``SigningCertURL``.
- Check order, cheapest first: the shape, the topic (when topics are configured), the
  certificate URL (``https``, an allowed host, a ``.pem`` path), the signature's encoding,
  then the signature. Only then
  is anything fetched from ``SubscribeURL`` (same host rule). So an unsigned request makes us
  fetch at most a certificate from an allowed host, which is cached by URL afterwards.
- Allowed hosts are exact names (``sns.<region>.amazonaws.com`` by default), never patterns:
  a pattern such as ``sns.*.amazonaws.com`` also matches S3 bucket hosts anyone can serve a
  certificate from.
- Fetches use their own HTTP client: no redirects, no proxies from the environment, a
  timeout, a size cap; trusted CAs are the system's plus an optional CA file.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger(__name__)

MAX_CERTIFICATE_SIZE = 64 * 1024
CACHE_SIZE = 32


class SnsType(StrEnum):
    NOTIFICATION = "Notification"
    SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
    UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"


SIGNED_FIELDS: dict[SnsType, tuple[str, ...]] = {
    SnsType.NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SnsType.SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS[SnsType.UNSUBSCRIBE_CONFIRMATION] = SIGNED_FIELDS[SnsType.SUBSCRIPTION_CONFIRMATION]
OPTIONAL_FIELDS = frozenset({"Subject"})
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsInvalid(Exception):
    """Not an SNS message (400)."""


class SnsRefused(Exception):
    """An SNS message we do not believe: topic, certificate URL or signature (403)."""


class SnsUnavailable(Exception):
    """The certificate or subscription URL could not be reached; SNS should retry (503)."""


@dataclass(frozen=True, slots=True)
class SnsMessage:
    type: SnsType
    fields: Mapping[str, str]  # every string field of the body, as sent

    @property
    def topic_arn(self) -> str:
        return self.fields["TopicArn"]

    @property
    def message(self) -> str:
        return self.fields["Message"]

    @property
    def message_id(self) -> str:
        return self.fields["MessageId"]

    def string_to_sign(self) -> bytes:
        """The canonical string the signature covers (module notes)."""
        out = []
        for name in SIGNED_FIELDS[self.type]:
            if name in self.fields:
                out.append(f"{name}\n{self.fields[name]}\n")
        return "".join(out).encode("utf-8")


def parse_sns(body: bytes) -> SnsMessage:
    """The SNS message in an HTTP request body; raises :class:`SnsInvalid`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SnsInvalid("the body is not JSON") from None
    if not isinstance(data, dict):
        raise SnsInvalid("the body is not a JSON object")
    try:
        kind = SnsType(str(data.get("Type")))
    except ValueError:
        raise SnsInvalid("Type is not an SNS message type") from None
    fields = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    needed = {*SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL"}
    missing = sorted(needed - OPTIONAL_FIELDS - set(fields))
    if missing:
        raise SnsInvalid(f"missing fields: {', '.join(missing)}")
    return SnsMessage(kind, fields)


def allowed_url(url: str, hosts: frozenset[str]) -> bool:
    """Whether ``url`` is https on one of ``hosts`` (no user info)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return parts.scheme == "https" and not parts.username and host in hosts


def signature_bytes(message: SnsMessage) -> bytes | None:
    try:
        signature = base64.b64decode(message.fields["Signature"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return signature or None


def verify_signature(message: SnsMessage, certificate: x509.Certificate) -> bool:
    algorithm = HASHES.get(message.fields["SignatureVersion"])
    key = certificate.public_key()
    signature = signature_bytes(message)
    if algorithm is None or signature is None or not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, message.string_to_sign(), padding.PKCS1v15(), algorithm())
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SnsPolicy:
    """What this server believes (``docs/config.md``, the ``SNS_*`` settings)."""

    cert_hosts: frozenset[str]
    topic_arns: frozenset[str] = frozenset()  # empty: any topic


class SnsVerifier:
    """Checks SNS messages (module notes) and confirms subscriptions, with a certificate cache."""

    def __init__(self, client: httpx.AsyncClient, policy: SnsPolicy) -> None:
        self._client = client
        self.policy = policy
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def check(self, message: SnsMessage) -> None:
        """Raise :class:`SnsRefused` or :class:`SnsUnavailable` unless ``message`` is genuine."""
        topics = self.policy.topic_arns
        if topics and message.topic_arn not in topics:
            raise SnsRefused("the topic is not one this server subscribed to")
        if message.fields["SignatureVersion"] not in HASHES:
            raise SnsRefused("unknown SignatureVersion")
        url = message.fields["SigningCertURL"]
        if not allowed_url(url, self.policy.cert_hosts) or not urlsplit(url).path.endswith(".pem"):
            raise SnsRefused("SigningCertURL is not an allowed https URL")
        if signature_bytes(message) is None:
            raise SnsRefused("the signature is not base64")
        certificate = await self._certificate(url)
        if not verify_signature(message, certificate):
            raise SnsRefused("the signature does not verify")

    async def confirm(self, message: SnsMessage) -> None:
        """Confirm a subscription by fetching its ``SubscribeURL`` (after :meth:`check`)."""
        url = message.fields["SubscribeURL"]
        if not allowed_url(url, self.policy.cert_hosts):
            raise SnsRefused("SubscribeURL is not an allowed https URL")
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as error:
            raise SnsUnavailable(f"SubscribeURL: {type(error).__name__}") from None
        if response.status_code != 200:
            raise SnsUnavailable(f"SubscribeURL answered {response.status_code}")
        log.info("event=sns_subscription_confirmed topic=%s", message.topic_arn)

    async def _certificate(self, url: str) -> x509.Certificate:
        found = self._certificates.get(url)
        if found is not None:
            self._certificates.move_to_end(url)
            return found
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SnsRefused(f"SigningCertURL answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_CERTIFICATE_SIZE:
                        raise SnsRefused("the signing certificate is too large")
        except httpx.HTTPError as error:
            raise SnsUnavailable(f"SigningCertURL: {type(error).__name__}") from None
        try:
            certificate = x509.load_pem_x509_certificate(body)
        except ValueError:
            raise SnsRefused("SigningCertURL is not a PEM certificate") from None
        self._certificates[url] = certificate
        while len(self._certificates) > CACHE_SIZE:
            self._certificates.popitem(last=False)
        log.info("event=sns_certificate_fetched host=%s", urlsplit(url).hostname)
        return certificate
