"""The round trip every deployment test makes: SMTP in, then read back over IMAP and the API.

Plain stdlib clients (smtplib, imaplib, urllib) against published loopback ports, as an operator's
smoke check would do it. The server's certificate is its self-signed one, so TLS is not verified.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import ssl
import time
import urllib.request
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any


@dataclass(frozen=True, slots=True)
class Inbox:
    """What ``mailboxkit inbox create --json`` prints."""

    inbox_id: str
    email: str
    api_key: str

    @classmethod
    def from_json(cls, text: str) -> Inbox:
        data = json.loads(text)
        return cls(inbox_id=data["inbox_id"], email=data["email"], api_key=data["api_key"])


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_healthy(http_port: int, timeout: float = 120.0, host: str = "127.0.0.1") -> None:
    """Poll /healthz until it answers 200 (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{http_port}/healthz", timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def deliver(smtp_port: int, inbox: Inbox, host: str = "127.0.0.1") -> str:
    """Send one message to the MX; returns its unique subject."""
    subject = f"deploy check {uuid.uuid4().hex}"
    message = EmailMessage()
    message["From"] = "sender@example.org"
    message["To"] = inbox.email
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.org>"
    message.set_content(f"Body of {subject}.\n")
    with smtplib.SMTP(host, smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        refused = smtp.send_message(message)
    assert refused == {}
    return subject


def read_imap(imap_port: int, inbox: Inbox, subject: str, host: str = "127.0.0.1") -> bytes:
    """LOGIN after STARTTLS with the API key as password; the raw message with ``subject``."""
    with imaplib.IMAP4(host, imap_port, timeout=30) as imap:
        imap.starttls(_unverified())
        imap.login(inbox.email, inbox.api_key)
        status, _ = imap.select("INBOX", readonly=True)
        assert status == "OK"
        status, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert status == "OK", data
        uids = data[0].split()
        assert len(uids) == 1, data
        status, fetched = imap.uid("FETCH", uids[0], "(BODY.PEEK[])")
        assert status == "OK", fetched
        raw = fetched[0][1]
        assert isinstance(raw, bytes)
        imap.logout()
    return raw


def read_api(api_base: str, inbox: Inbox, subject: str) -> dict[str, Any]:
    """The message with ``subject`` as ``GET /api/v1/inboxes/{id}/messages`` lists it.

    ``api_base`` is http://host:port (the app itself) or https://host:port (nginx before it).
    """
    request = urllib.request.Request(
        f"{api_base}/api/v1/inboxes/{inbox.inbox_id}/messages",
        headers={"Authorization": f"Bearer {inbox.api_key}", "Accept": "application/json"},
    )
    context = _unverified() if api_base.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        assert response.status == 200
        listing = json.loads(response.read())
    found = [m for m in listing["messages"] if m["subject"] == subject]
    assert len(found) == 1, listing
    item: dict[str, Any] = found[0]
    return item


def round_trip(
    inbox: Inbox, *, smtp_port: int, imap_port: int, api_base: str, host: str = "127.0.0.1"
) -> None:
    """Deliver over SMTP; find the same message over IMAP and the API."""
    subject = deliver(smtp_port, inbox, host)
    raw = read_imap(imap_port, inbox, subject, host)
    assert f"Subject: {subject}".encode() in raw
    assert f"Body of {subject}.".encode() in raw
    item = read_api(api_base, inbox, subject)
    assert item["inbox_id"] == inbox.inbox_id
    assert item["direction"] == "inbound"
    assert "sender@example.org" in json.dumps(item["from"])
