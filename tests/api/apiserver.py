"""The whole server with the HTTP API on loopback, a clock the tests move, and API helpers.

Imported by the API tests as ``api.apiserver`` (``tests`` is on the path).
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from mailboxkit.dns.resolver import Resolver

from harness import ServerThread, free_port, server_settings

START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told (thread-safe enough: one writer, the test)."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class Api:
    server: ServerThread
    clock: FakeClock

    @property
    def url(self) -> str:
        return self.server.http_url + "/api/v1"

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def register(self, name: str = "Agent", owner_email: str | None = None) -> dict[str, Any]:
        email = owner_email or f"{name.lower().replace(' ', '.')}@example.com"
        with self.client() as c:
            # Each registration from its own (proxied) address, so the per-address limit
            # does not get in the way of tests about something else.
            ip = f"10.0.{len(name) % 250}.{sum(map(ord, name)) % 250}"
            r = c.post(
                "/register",
                json={"name": name, "owner_email": email},
                headers={"X-Forwarded-For": ip},
            )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def send(self, to: str, raw: bytes, mail_from: str = "alice@sender.test") -> None:
        with smtplib.SMTP("127.0.0.1", self.server.smtp_port) as smtp:
            refused = smtp.sendmail(mail_from, [to], raw)
        assert refused == {}


def start_api(
    tmp_path: Path, database_url: str, resolver: Resolver | None = None, **overrides: Any
) -> tuple[ServerThread, FakeClock]:
    port = free_port()
    values: dict[str, Any] = {
        "http_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "registration_enabled": True,
        "registration_limit_per_ip": 1000,
        "registration_limit_per_email": 1000,
        "api_rate_limit": 0,
        # Webhook receivers in tests listen on loopback (SSRF checks: test_webhooks_ssrf.py).
        "webhook_allow_private_targets": True,
    }
    values.update(overrides)
    server = ServerThread(server_settings(tmp_path / "data", database_url, **values), resolver)
    clock = FakeClock()
    server.app.clock = clock
    server.start()
    return server, clock


def message(
    to: str,
    subject: str = "Hello",
    body: str = "Hi there.\n",
    *,
    sender: str = "Alice <alice@sender.test>",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def idle(api: Api) -> None:
    """Wait until the dispatcher has nothing in flight and nothing due."""
    dispatcher = api.server.app.webhooks
    assert dispatcher is not None
    api.server.call(dispatcher.idle())


def setup_hook(api: Api, url: str, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    owner = api.register("Hook Owner")
    with api.client(owner["api_key"]) as c:
        r = c.post("/webhooks", json={"url": url, **body})
    assert r.status_code == 201, r.text
    return owner, r.json()
