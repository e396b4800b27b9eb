"""SPF, DKIM and DMARC on the MX path: verdicts, Authentication-Results, Junk and refusal."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox

from harness import ServerThread, server_settings

KEY = ed25519.Ed25519PrivateKey.generate()
SEED = base64.b64encode(
    KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
)
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()

RECORDS = {
    # Signs and sends from 127.0.0.1, publishes p=reject: passes everything.
    "good.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.good.test": {"TXT": ["v=DMARC1; p=reject"]},
    "sel._domainkey.good.test": {"TXT": [f"v=DKIM1; k=ed25519; p={PUBLIC}"]},
    # Sends from elsewhere, publishes p=reject: forged mail is refused.
    "bank.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "_dmarc.bank.test": {"TXT": ["v=DMARC1; p=reject"]},
    # Publishes p=quarantine: failing mail goes to Junk.
    "shop.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    # The test client's address has a name that resolves back to it.
    "1.0.0.127.in-addr.arpa": {"PTR": ["relay.good.test."]},
    "relay.good.test": {"A": ["127.0.0.1"]},
}


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerThread]:
    settings = server_settings(tmp_path / "data", database_url, verify_inbound=True)
    running = ServerThread(settings, resolver=FakeResolver(RECORDS))
    running.start()
    yield running
    running.stop()


def message(sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: bot@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@x.test>\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\n\r\n"
        "Your code is 123456.\r\n"
    ).encode()


def signed(data: bytes) -> bytes:
    header: bytes = dkim.sign(
        data,
        b"sel",
        b"good.test",
        SEED,
        signature_algorithm=b"ed25519-sha256",
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
    )
    return header + data


def send(server: ServerThread, mail_from: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.sendmail(mail_from, ["bot@example.test"], data)


def stored(server: ServerThread) -> tuple[bytes, dict[str, object], str, str]:
    [row] = server.query(
        select(m.messages.c.raw_key, m.messages.c.auth, m.folders.c.name, m.events.c.type)
        .join(m.entries, m.entries.c.message_id == m.messages.c.id)
        .join(m.folders, m.folders.c.id == m.entries.c.folder_id)
        .join(m.events, m.events.c.message_id == m.messages.c.id)
    )
    return server.blob(row.raw_key), row.auth, row.name, row.type


def shown(server: ServerThread, inbox: Inbox) -> dict[str, Any]:
    """The one message of ``inbox`` as the API shows it to the account."""
    key = server.create_key(inbox.account_id)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"{server.http_url}/api/v1", headers=headers) as c:
        [item] = c.get(f"/inboxes/{inbox.id}/messages").json()["messages"]
        found: dict[str, Any] = c.get(f"/inboxes/{inbox.id}/messages/{item['message_id']}").json()
    return found


def header_block(raw: bytes) -> bytes:
    return raw[: raw.index(b"\r\nReceived: ")]


def received(raw: bytes) -> bytes:
    start = raw.index(b"Received: ")
    return raw[start : raw.index(b"\r\n", start)]


def test_passing_message_is_trusted(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    send(server, "alice@good.test", signed(message("alice@good.test", "pass")))
    raw, auth, folder, event = stored(server)
    results = header_block(raw)
    assert results.startswith(b"Authentication-Results: mx.example.test;")
    for verdict in (b"spf=pass", b"dkim=pass", b"dmarc=pass", b"header.d=good.test"):
        assert verdict in results
    assert (folder, event) == ("INBOX", "message.received")
    assert auth["spf"]["result"] == "pass"  # type: ignore[index]
    assert [d["result"] for d in auth["dkim"]] == ["pass"]  # type: ignore[index]
    assert auth["dmarc"]["result"] == "pass"  # type: ignore[index]
    api = shown(server, inbox)
    assert api["auth"] == auth
    assert [api["auth"][k]["result"] for k in ("spf", "dmarc")] == ["pass", "pass"]
    assert [d["result"] for d in api["auth"]["dkim"]] == ["pass"]
    [results] = [h["value"] for h in api["headers"] if h["name"] == "Authentication-Results"]
    assert "dmarc=pass" in results


def test_altered_after_signing_fails_dkim_but_spf_keeps_dmarc(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    data = signed(message("alice@good.test", "altered")).replace(b"123456", b"654321")
    send(server, "alice@good.test", data)
    raw, auth, folder, event = stored(server)
    assert b"dkim=fail" in header_block(raw)
    assert [d["result"] for d in auth["dkim"]] == ["fail"]  # type: ignore[index]
    assert auth["dmarc"]["result"] == "pass"  # type: ignore[index]
    assert (folder, event) == ("INBOX", "message.received")
    api = shown(server, inbox)["auth"]
    assert ([d["result"] for d in api["dkim"]], api["dmarc"]["result"]) == (["fail"], "pass")


def test_forged_from_of_reject_domain_is_refused(server: ServerThread) -> None:
    server.create_inbox("bot@example.test")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server, "ceo@bank.test", message("ceo@bank.test", "forged"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    assert server.query(select(m.messages.c.id)) == []


def test_quarantine_failure_goes_to_junk(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    send(server, "promo@shop.test", message("promo@shop.test", "junk"))
    raw, auth, folder, event = stored(server)
    assert b"spf=fail" in header_block(raw) and b"dmarc=fail" in header_block(raw)
    assert (folder, event) == ("Junk", "message.received.spam")
    assert auth["dmarc"]["disposition"] == "quarantine"  # type: ignore[index]
    api = shown(server, inbox)["auth"]
    assert (api["spf"]["result"], api["dmarc"]["result"]) == ("fail", "fail")
    assert api["dmarc"]["disposition"] == "quarantine"


def test_no_policy_is_labelled_unauthenticated(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    send(server, "someone@nowhere.test", message("someone@nowhere.test", "unknown"))
    raw, auth, folder, event = stored(server)
    assert b"spf=none" in header_block(raw) and b"dmarc=none" in header_block(raw)
    assert (folder, event) == ("INBOX", "message.received.unauthenticated")
    assert auth["dmarc"]["result"] == "none"  # type: ignore[index]
    api = shown(server, inbox)["auth"]
    assert (api["spf"]["result"], api["dmarc"]["result"]) == ("none", "none")


def test_received_names_the_peer_by_confirmed_reverse_dns(server: ServerThread) -> None:
    server.create_inbox("bot@example.test")
    send(server, "alice@good.test", signed(message("alice@good.test", "trace")))
    raw, _, _, _ = stored(server)
    assert received(raw).endswith(b" (relay.good.test [127.0.0.1])")


def test_forged_results_claiming_to_be_ours_are_removed(server: ServerThread) -> None:
    server.create_inbox("bot@example.test")
    forged = (
        b"Authentication-Results: MX.example.test; dmarc=pass header.from=bank.test\r\n"
        b"Authentication-Results:\r\n\t(folded) mx.example.test; dkim=pass\r\n"
        b"Authentication-Results: relay.other.test; spf=pass\r\n"
    )
    send(server, "promo@shop.test", forged + message("promo@shop.test", "forged-results"))
    raw, _, folder, _ = stored(server)
    assert raw.count(b"Authentication-Results: mx.example.test;") == 1  # ours, at the top
    assert raw.lower().count(b"mx.example.test; d") == 0
    assert b"Authentication-Results: relay.other.test; spf=pass\r\n" in raw  # another's stays
    assert raw.endswith(message("promo@shop.test", "forged-results"))  # the rest byte for byte
    assert folder == "Junk"
