"""Amazon SNS stood in for by the test: a CA and an RSA signing certificate (trustme), a local
HTTPS server that serves the certificate and answers subscription confirmation URLs, and
messages signed exactly as SNS signs them (SignatureVersion 1: SHA1withRSA, 2:
SHA256withRSA, over the documented canonical string).

Imported as ``e2e.snsstandin`` (``tests`` is on the path).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_PATH = "/SimpleNotificationService-0000000000000000000000.pem"
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


class SnsStandIn:
    """The HTTPS side of SNS on 127.0.0.1 (also reachable as localhost), and its signer."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA(key_type=trustme.KeyType.RSA)
        signing = self.ca.issue_cert("sns.eu-west-1.amazonaws.test", key_type=trustme.KeyType.RSA)
        self.signing_cert_pem = signing.cert_chain_pems[0].bytes()
        key = serialization.load_pem_private_key(signing.private_key_pem.bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "sns-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.requests: list[str] = []  # paths with query, in order
        self.confirmed: list[str] = []  # tokens of confirmed subscriptions
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SnsStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    @property
    def cert_fetches(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.startswith(CERT_PATH))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with standin._lock:
                    standin.requests.append(self.path)
                parts = urlsplit(self.path)
                if parts.path == CERT_PATH:
                    self._answer(200, standin.signing_cert_pem, "application/x-pem-file")
                elif parts.path == "/" and "ConfirmSubscription" in parts.query:
                    [token] = parse_qs(parts.query)["Token"]
                    with standin._lock:
                        standin.confirmed.append(token)
                    body = b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult/>"
                    self._answer(200, body + b"</ConfirmSubscriptionResponse>", "text/xml")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    # --- messages, signed as SNS signs them ----------------------------------------------

    def sign(
        self, message: dict[str, str], *, version: str = "2", cert_url: str | None = None
    ) -> dict[str, str]:
        """``message`` with SignatureVersion, SigningCertURL and its Signature."""
        names = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
        canonical = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self._key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "SigningCertURL": cert_url or self.url(CERT_PATH),
            "Signature": base64.b64encode(signature).decode(),
        }

    def notification(
        self, ses: dict[str, Any], *, topic: str = TOPIC, **signing: Any
    ) -> dict[str, str]:
        message = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": json.dumps(ses),
            "Timestamp": "2026-11-28T09:30:00.000Z",
            "UnsubscribeURL": self.url("/?Action=Unsubscribe"),
        }
        return self.sign(message, **signing)

    def subscription_confirmation(self, *, topic: str = TOPIC, **signing: Any) -> dict[str, str]:
        token = uuid.uuid4().hex
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.",
            "SubscribeURL": self.url(
                f"/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"
            ),
            "Timestamp": "2026-11-28T09:30:00.000Z",
        }
        return self.sign(message, **signing)


def bounce(
    ses_id: str, email: str, *, kind: str = "Permanent", event: bool = False
) -> dict[str, Any]:
    """An SES bounce notification (``event``: the configuration-set event publishing form)."""
    return {
        ("eventType" if event else "notificationType"): "Bounce",
        "bounce": {
            "bounceType": kind,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": email,
                    "action": "failed",
                    "status": "5.1.1" if kind == "Permanent" else "4.2.2",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown"
                    if kind == "Permanent"
                    else "smtp; 452 4.2.2 mailbox full",
                }
            ],
            "timestamp": "2026-11-28T09:30:00.000Z",
            "feedbackId": "0100018c-feedback-000000",
            "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": _mail(ses_id, email),
    }


def complaint(ses_id: str, email: str, *, event: bool = False) -> dict[str, Any]:
    return {
        ("eventType" if event else "notificationType"): "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": email}],
            "timestamp": "2026-11-28T09:31:00.000Z",
            "feedbackId": "0100018c-complaint-000000",
            "complaintFeedbackType": "abuse",
        },
        "mail": _mail(ses_id, email),
    }


def delivery(ses_id: str, email: str, *, event: bool = False) -> dict[str, Any]:
    return {
        ("eventType" if event else "notificationType"): "Delivery",
        "delivery": {
            "timestamp": "2026-11-28T09:30:01.000Z",
            "processingTimeMillis": 546,
            "recipients": [email],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": _mail(ses_id, email),
    }


def _mail(ses_id: str, email: str) -> dict[str, Any]:
    return {
        "timestamp": "2026-11-28T09:29:59.000Z",
        "messageId": ses_id,
        "source": "bot@example.test",
        "destination": [email],
    }
