"""Sending over the HTTP API, end to end: the message reaches the recipient's MX (an aiosmtpd
sink found through the FakeResolver) DKIM-signed with RSA and Ed25519, a copy is in Sent,
replies and forwards thread, local recipients get it straight away, idempotency keys hold
under concurrency, and bad requests are 4xx."""

from __future__ import annotations

import base64
import email
import smtplib
import threading
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.apiserver import message
from e2e.sending import Sending, start_sending
from mailboxkit.store import models as m


@pytest.fixture
def sending(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    running = start_sending(tmp_path, database_url, send_max_recipients=5)
    yield running
    running.stop()


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def test_api_send_is_signed_delivered_and_kept_in_sent(sending: Sending) -> None:
    inbox, key = sending.inbox("bot@example.test")
    body = {
        "to": ["Alice <alice@remote.test>"],
        "cc": "carol@remote.test",
        "bcc": ["hidden@remote.test"],
        "subject": "Invoice 42 - ünïcode",
        "text": "Hi Alice,\nthe invoice is attached.\n",
        "html": "<p>Hi Alice, the invoice is attached.</p>",
        "headers": {"X-Agent-Run": "run-7"},
        "labels": ["billing"],
        "attachments": [
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(b"%PDF-1.4 fake").decode(),
            }
        ],
    }
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{inbox.id}/messages/send", json=body)
        assert r.status_code == 200, r.text
        sent = r.json()
        got = sending.sink.next()
        assert got.mail_from == "bot@example.test"
        assert sorted(got.rcpt_tos) == [
            "alice@remote.test",
            "carol@remote.test",
            "hidden@remote.test",
        ]
        assert sending.dkim_verdicts(got.data) == [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
        msg = parsed(got.data)
        assert msg["Bcc"] is None and b"hidden@remote.test" not in got.data
        assert msg["X-Agent-Run"] == "run-7"
        assert str(email.header.make_header(email.header.decode_header(msg["Subject"]))) == (
            "Invoice 42 - ünïcode"
        )
        assert [p.get_filename() for p in msg.walk() if p.get_filename()] == ["invoice.pdf"]
        copy = api.get(f"/inboxes/{inbox.id}/messages/{sent['message_id']}").json()
        listing = api.get(f"/inboxes/{inbox.id}/messages", params={"direction": "outbound"}).json()
    assert copy["direction"] == "outbound"
    assert copy["labels"] == ["billing"]
    assert copy["read"] is True
    assert copy["thread_id"] == sent["thread_id"]
    assert copy["internet_message_id"] == msg["Message-ID"].strip("<>")
    assert [a["filename"] for a in copy["attachments"]] == ["invoice.pdf"]
    assert [i["message_id"] for i in listing["messages"]] == [sent["message_id"]]
    sending.settled(3)
    [event] = sending.events("message.sent")
    assert event.message_id == sent["message_id"]
    assert sorted(event.payload["data"]["recipients"]) == sorted(got.rcpt_tos)


def test_a_large_attachment_is_sent_signed_and_whole(sending: Sending) -> None:
    # Above the size composed and parsed inline: both run in a worker process.
    inbox, key = sending.inbox("bot@example.test")
    report = bytes(range(256)) * 1200  # 300 KiB
    body = {
        "to": "alice@remote.test",
        "subject": "The report",
        "text": "Attached.\n",
        "attachments": [
            {
                "filename": "report.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(report).decode(),
            }
        ],
    }
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{inbox.id}/messages/send", json=body)
        assert r.status_code == 200, r.text
        got = sending.sink.next()
        copy = api.get(f"/inboxes/{inbox.id}/messages/{r.json()['message_id']}").json()
    assert sending.dkim_verdicts(got.data) == [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
    [part] = [p for p in parsed(got.data).walk() if p.get_filename() == "report.pdf"]
    assert part.get_payload(decode=True) == report
    assert [(a["filename"], a["size"]) for a in copy["attachments"]] == [
        ("report.pdf", len(report))
    ]


def deliver_inbound(sending: Sending, raw: bytes, to: str) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", sending.server.smtp_port) as smtp:
        smtp.sendmail("alice@remote.test", [to], raw)
    [row] = sending.server.query(
        select(m.messages.c.id, m.messages.c.thread_id).where(m.messages.c.direction == "inbound")
    )
    return {"message_id": row.id, "thread_id": row.thread_id}


def test_reply_reply_all_and_forward_thread(sending: Sending) -> None:
    inbox, key = sending.inbox("bot@example.test")
    raw = message(
        "bot@example.test",
        subject="Quarterly numbers",
        body="Can you check the attached?\n",
        sender="Alice <alice@remote.test>",
        message_id="<orig@remote.test>",
        in_reply_to="<root@remote.test>",
        attachment=("numbers.csv", b"a,b\n1,2\n"),
    )
    raw = raw.replace(
        b"To: bot@example.test", b"To: bot@example.test, carol@remote.test\r\nCc: dave@remote.test"
    )
    original = deliver_inbound(sending, raw, "bot@example.test")
    path = f"/inboxes/{inbox.id}/messages/{original['message_id']}"
    with sending.api(key) as api:
        reply = api.post(f"{path}/reply", json={"text": "Looks right."}).json()
        got = sending.sink.next()
        everyone = api.post(f"{path}/reply-all", json={"text": "Adding everyone."}).json()
        got_all = sending.sink.next()
        forward = api.post(
            f"{path}/forward", json={"to": "eve@remote.test", "text": "FYI, Eve."}
        ).json()
        got_fwd = sending.sink.next()
        thread = api.get(f"/threads/{original['thread_id']}").json()
    msg = parsed(got.data)
    assert got.rcpt_tos == ("alice@remote.test",)
    assert msg["Subject"] == "Re: Quarterly numbers"
    assert msg["In-Reply-To"] == "<orig@remote.test>"
    assert msg["References"] == "<root@remote.test> <orig@remote.test>"
    assert reply["thread_id"] == original["thread_id"]
    assert sorted(got_all.rcpt_tos) == [
        "alice@remote.test",
        "carol@remote.test",
        "dave@remote.test",
    ]
    assert parsed(got_all.data)["To"] == "Alice <alice@remote.test>"
    assert everyone["thread_id"] == original["thread_id"]
    fwd = parsed(got_fwd.data)
    assert got_fwd.rcpt_tos == ("eve@remote.test",)
    assert fwd["Subject"] == "Fwd: Quarterly numbers"
    assert [p.get_filename() for p in fwd.walk() if p.get_filename()] == ["numbers.csv"]
    text = next(p for p in fwd.walk() if p.get_content_type() == "text/plain").get_payload(
        decode=True
    )
    assert b"FYI, Eve." in text and b"Can you check the attached?" in text
    assert forward["thread_id"] == original["thread_id"]
    ids = {i["message_id"] for i in thread.get("messages", [])}
    assert {reply["message_id"], everyone["message_id"], forward["message_id"]} <= ids
    for item in (got, got_all, got_fwd):
        assert [ok for _, ok in sending.dkim_verdicts(item.data)] == [True, True]


def test_mail_between_local_inboxes_is_delivered_locally_and_threads(sending: Sending) -> None:
    bot, key = sending.inbox("bot@example.test")
    peer = sending.server.create_inbox("peer@example.test", bot.account_id)
    with sending.api(key) as api:
        first = api.post(
            f"/inboxes/{bot.id}/messages/send",
            json={"to": "peer@example.test", "subject": "Ping", "text": "ping"},
        ).json()
        sending.settled(1)
        [received] = api.get(f"/inboxes/{peer.id}/messages").json()["messages"]
        raw = api.get(f"/inboxes/{peer.id}/messages/{received['message_id']}/raw")
        answer = api.post(
            f"/inboxes/{peer.id}/messages/{received['message_id']}/reply", json={"text": "pong"}
        ).json()
        sending.settled(2)
        [back] = api.get(f"/inboxes/{bot.id}/messages", params={"direction": "inbound"}).json()[
            "messages"
        ]
    assert sending.sink.empty()  # nothing left through the MX
    assert raw.status_code == 200
    assert [ok for _, ok in sending.dkim_verdicts(raw.content)] == [True, True]
    assert back["subject"] == "Re: Ping"
    assert back["thread_id"] == first["thread_id"]  # the reply threads with bot's Sent copy
    assert answer["thread_id"] == received["thread_id"]


def test_the_same_idempotency_key_sends_once_even_concurrently(sending: Sending) -> None:
    inbox, key = sending.inbox("bot@example.test")
    body = {"to": "alice@remote.test", "subject": "Once", "text": "only once"}
    url = f"/inboxes/{inbox.id}/messages/send"
    answers: list[httpx.Response] = []
    start = threading.Barrier(4)

    def post() -> None:
        with sending.api(key) as api:
            start.wait()
            answers.append(api.post(url, json=body, headers={"Idempotency-Key": "k-1"}))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.json()["message_id"] for a in answers}) == 1
    sending.sink.next()
    sending.settled(1)
    with sending.api(key) as api:
        again = api.post(url, json=body, headers={"Idempotency-Key": "k-1"})
        other = api.post(url, json={**body, "text": "changed"}, headers={"Idempotency-Key": "k-1"})
    assert again.json() == answers[0].json()
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    rows = sending.server.query(select(m.messages.c.id).where(m.messages.c.subject == "Once"))
    assert len(rows) == 1
    assert sending.sink.empty()
    assert sending.sink.handler.attempts == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": "nobody"}, "body.to"),
        ({"to": [f"r{i}@remote.test" for i in range(6)]}, "body.to"),
        ({"to": "not-an-address"}, "body.to"),
        ({"to": "a@remote.test", "headers": {"From": "boss@example.test"}}, "body.headers"),
        ({"to": "a@remote.test", "headers": {"Bad Name": "x"}}, "body.headers"),
        (
            {"to": "a@remote.test", "attachments": [{"filename": "x", "content": "%%%"}]},
            "body.attachments.0.content",
        ),
        ({"to": "a@remote.test", "subject": "a\r\nBcc: evil@remote.test"}, "body.subject"),
    ],
)
def test_bad_requests_are_refused_and_send_nothing(
    sending: Sending, body: dict[str, Any], field: str
) -> None:
    inbox, key = sending.inbox("bot@example.test")
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{inbox.id}/messages/send", json=body)
    assert r.status_code == 422, r.text
    assert any(f["field"].startswith(field) for f in r.json()["error"]["fields"])
    assert sending.server.query(select(m.outbound_messages.c.id)) == []


def test_other_inboxes_and_messages_are_not_found(sending: Sending) -> None:
    inbox, _ = sending.inbox("bot@example.test")
    _, stranger_key = sending.inbox("stranger@example.test")
    scoped = sending.server.create_key(inbox.account_id, inbox.id)
    sibling = sending.server.create_inbox("sibling@example.test", inbox.account_id)
    body = {"to": "a@remote.test", "text": "x"}
    with sending.api(stranger_key) as api:
        assert api.post(f"/inboxes/{inbox.id}/messages/send", json=body).status_code == 404
    with sending.api(scoped) as api:
        assert api.post(f"/inboxes/{sibling.id}/messages/send", json=body).status_code == 404
        missing = f"/inboxes/{inbox.id}/messages/00000000-0000-7000-8000-000000000000/reply"
        assert api.post(missing, json={"text": "x"}).status_code == 404
        assert api.post(f"/inboxes/{inbox.id}/messages/send", json=body).status_code == 200
