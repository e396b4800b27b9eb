"""Drafts and scheduled sending over the HTTP API, end to end: drafts are made, changed, listed
and deleted, each with a copy in the Drafts folder that IMAP shows with \\Draft; sending one
reaches the recipient's MX (an aiosmtpd sink) once, whatever the retries, and moves it to Sent;
a scheduled draft waits for its time (the clock the tests move), survives a restart and is
sent once; replies and forwards mark their original \\Answered and $Forwarded."""

from __future__ import annotations

import base64
import email
import imaplib
import re
import smtplib
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.apiserver import FakeClock, message
from e2e.sending import Sending, routes, start_sending
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store import models as m

from harness import ServerThread, free_port

ADDRESS = "bot@example.test"


@pytest.fixture
def sending(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    running = start_sending(tmp_path, database_url, imap_port=free_port())
    yield running
    running.stop()


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def iso(sending: Sending, seconds: float) -> str:
    return (sending.clock.now() + timedelta(seconds=seconds)).isoformat()


class Imap:
    """imaplib on the server's IMAP port, logged in with the inbox's address and API key."""

    def __init__(self, sending: Sending, key: str) -> None:
        self.client = imaplib.IMAP4("127.0.0.1", sending.server.imap_port)
        self.client.login(ADDRESS, key)

    def folder(self, name: str) -> list[tuple[bytes, bytes]]:
        """(FLAGS, whole message) of every message in ``name``."""
        typ, _ = self.client.select(name, readonly=True)
        assert typ == "OK"
        typ, data = self.client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        found = []
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                assert flags is not None
                found.append((flags.group(1), item[1]))
        return found

    def flags(self, name: str) -> list[bytes]:
        return [flags for flags, _ in self.folder(name)]

    def close(self) -> None:
        self.client.logout()


@pytest.fixture
def bot(sending: Sending) -> tuple[str, str]:
    inbox, key = sending.inbox(ADDRESS)
    return inbox.id, key


def drafts_in_store(sending: Sending) -> list[Any]:
    return sending.server.query(select(m.drafts.c.id, m.drafts.c.status))


def scheduler_pass(sending: Sending) -> None:
    """Wake the scheduler and wait until it has looked at the due drafts once more."""
    scheduler = sending.server.app.drafts
    assert scheduler is not None
    sending.server.call(scheduler.look_now())


def test_create_update_list_get_and_delete(sending: Sending, bot: tuple[str, str]) -> None:
    inbox_id, key = bot
    attachment = base64.b64encode(b"%PDF-1.4 draft").decode()
    body = {
        "to": ["Alice <alice@remote.test>"],
        "bcc": "hidden@remote.test",
        "subject": "Invoice 42",
        "text": "First version.",
        "labels": ["billing"],
        "attachments": [
            {"filename": "i.pdf", "content_type": "application/pdf", "content": attachment}
        ],
    }
    imap = Imap(sending, key)
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{inbox_id}/drafts", json=body)
        assert r.status_code == 201, r.text
        draft = r.json()
        url = f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}"
        [(flags, raw)] = imap.folder("Drafts")
        assert set(flags.split()) == {b"\\Seen", b"\\Draft"}
        assert parsed(raw)["Bcc"] == "hidden@remote.test"  # a draft keeps its Bcc
        assert b"First version." in raw
        changed = api.patch(url, json={"text": "Second version.", "cc": "carol@remote.test"})
        assert changed.status_code == 200, changed.text
        got = api.get(url).json()
        listed = api.get(f"/inboxes/{inbox_id}/drafts").json()
        everywhere = api.get("/drafts").json()
        messages = api.get(f"/inboxes/{inbox_id}/messages").json()
        [(flags_after, raw_after)] = imap.folder("Drafts")
        deleted = api.delete(url)
        gone = api.get(url)
        assert imap.folder("Drafts") == []
        assert api.get(f"/inboxes/{inbox_id}/drafts").json()["drafts"] == []
    imap.close()
    assert draft["status"] == "draft" and draft["send_at"] is None
    assert draft["to"] == ["Alice <alice@remote.test>"] and draft["bcc"] == ["hidden@remote.test"]
    assert [a["filename"] for a in draft["attachments"]] == ["i.pdf"]
    assert got["text"] == "Second version." and got["cc"] == ["carol@remote.test"]
    assert got["subject"] == "Invoice 42" and got["labels"] == ["billing"]  # kept
    assert [a["filename"] for a in got["attachments"]] == ["i.pdf"]  # kept
    assert got["message_id"] != draft["message_id"]  # a new copy replaced the old one
    assert b"Second version." in raw_after and b"First version." not in raw_after
    assert b"\\Draft" in flags_after
    assert [d["draft_id"] for d in listed["drafts"]] == [draft["draft_id"]]
    assert [d["draft_id"] for d in everywhere["drafts"]] == [draft["draft_id"]]
    assert messages["messages"] == []  # a draft is not a message of the inbox (yet)
    assert deleted.status_code == 204
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert sending.server.query(select(m.outbound_messages.c.id)) == []  # nothing was sent


def test_sending_a_draft_delivers_once_and_moves_it_to_sent(
    sending: Sending, bot: tuple[str, str]
) -> None:
    inbox_id, key = bot
    imap = Imap(sending, key)
    with sending.api(key) as api:
        draft = api.post(
            f"/inboxes/{inbox_id}/drafts",
            json={"to": "alice@remote.test", "subject": "Draft one", "text": "Hello from a draft"},
        ).json()
        url = f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}"
        assert [b"\\Draft" in f for f in imap.flags("Drafts")] == [True]
        first = api.post(f"{url}/send", headers={"Idempotency-Key": "draft-1"})
        again = api.post(f"{url}/send", headers={"Idempotency-Key": "draft-1"})
        got = sending.sink.next()
        sending.settled(1)
        without_key = api.post(f"{url}/send")
        patched = api.patch(url, json={"text": "too late"})
        after = api.get(url).json()
        listed = api.get(f"/inboxes/{inbox_id}/drafts").json()["drafts"]
        sent_listed = api.get(f"/inboxes/{inbox_id}/drafts", params={"status": "sent"}).json()
        sent_copy = api.get(f"/inboxes/{inbox_id}/messages/{first.json()['message_id']}").json()
        messages = api.get(f"/inboxes/{inbox_id}/messages").json()["messages"]
    assert imap.folder("Drafts") == []
    [(sent_flags, sent_raw)] = imap.folder("Sent")
    imap.close()
    assert first.status_code == 200, first.text
    assert again.json() == first.json()
    assert got.rcpt_tos == ("alice@remote.test",)
    assert b"Hello from a draft" in got.data
    assert [ok for _, ok in sending.dkim_verdicts(got.data)] == [True, True]
    assert sending.sink.empty() and sending.sink.handler.attempts == 1
    assert without_key.status_code == 409 and without_key.json()["error"]["code"] == "conflict"
    assert patched.status_code == 409 and patched.json()["error"]["code"] == "conflict"
    assert after["status"] == "sent" and after["message_id"] is None
    assert after["sent_message_id"] == first.json()["message_id"]
    assert listed == []
    assert [d["draft_id"] for d in sent_listed["drafts"]] == [draft["draft_id"]]
    assert sent_copy["direction"] == "outbound" and sent_copy["subject"] == "Draft one"
    assert [x["message_id"] for x in messages] == [sent_copy["message_id"]]
    assert b"\\Draft" not in sent_flags and b"Hello from a draft" in sent_raw
    assert len(sending.server.query(select(m.outbound_messages.c.id))) == 1


def test_a_scheduled_draft_waits_for_its_time(sending: Sending, bot: tuple[str, str]) -> None:
    inbox_id, key = bot
    body = {"to": "alice@remote.test", "subject": "Later", "text": "in an hour"}
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{inbox_id}/drafts", json={**body, "send_at": iso(sending, 3600)})
        assert r.status_code == 201, r.text
        url = f"/inboxes/{inbox_id}/drafts/{r.json()['draft_id']}"
        scheduler_pass(sending)
        sending.clock.advance(3590)
        scheduler_pass(sending)
        waiting = api.get(url).json()
        assert sending.server.query(select(m.outbound_messages.c.id)) == []
        sending.clock.advance(20)
        sending.server.app.drafts.wake()  # type: ignore[union-attr]
        got = sending.sink.next()
        sent = api.get(url).json()
    assert r.json()["status"] == "scheduled"
    assert waiting["status"] == "scheduled" and waiting["send_at"] == r.json()["send_at"]
    assert got.rcpt_tos == ("alice@remote.test",) and b"in an hour" in got.data
    assert sent["status"] == "sent" and sent["sent_message_id"]
    scheduler_pass(sending)
    assert sending.sink.empty() and len(sending.server.query(select(m.outbound_messages.c.id))) == 1


def test_cancelling_and_the_limits_of_send_at(sending: Sending, bot: tuple[str, str]) -> None:
    inbox_id, key = bot
    body = {"to": "alice@remote.test", "subject": "Maybe", "text": "x"}
    with sending.api(key) as api:
        too_far = api.post(
            f"/inboxes/{inbox_id}/drafts", json={**body, "send_at": iso(sending, 400 * 86400)}
        )
        nobody = api.post(
            f"/inboxes/{inbox_id}/drafts", json={"text": "x", "send_at": iso(sending, 60)}
        )
        kept = api.post(f"/inboxes/{inbox_id}/drafts", json={**body, "send_at": iso(sending, 60)})
        deleted = api.post(
            f"/inboxes/{inbox_id}/drafts", json={**body, "send_at": iso(sending, 60)}
        ).json()
        cancelled = api.patch(
            f"/inboxes/{inbox_id}/drafts/{kept.json()['draft_id']}", json={"send_at": None}
        ).json()
        api.delete(f"/inboxes/{inbox_id}/drafts/{deleted['draft_id']}")
        sending.clock.advance(120)
        scheduler_pass(sending)
        assert sending.server.query(select(m.outbound_messages.c.id)) == []
        now = api.post(
            f"/inboxes/{inbox_id}/drafts",
            json={**body, "subject": "Right now", "send_at": sending.clock.now().isoformat()},
        )
        got = sending.sink.next()
    assert too_far.status_code == 422
    assert too_far.json()["error"]["fields"][0]["field"] == "body.send_at"
    assert nobody.status_code == 422 and nobody.json()["error"]["code"] == "validation_error"
    assert cancelled["status"] == "draft" and cancelled["send_at"] is None
    assert now.status_code == 201
    assert parsed(got.data)["Subject"] == "Right now"


def test_a_scheduled_draft_survives_a_restart_and_is_sent_once(
    sending: Sending, bot: tuple[str, str]
) -> None:
    inbox_id, key = bot
    with sending.api(key) as api:
        draft = api.post(
            f"/inboxes/{inbox_id}/drafts",
            json={
                "to": "alice@remote.test",
                "subject": "After restart",
                "send_at": iso(sending, 600),
            },
        ).json()
    sending.server.stop()
    later = FakeClock(sending.clock.now() + timedelta(seconds=3600))
    server = ServerThread(sending.server.settings, resolver=FakeResolver(routes()))
    server.app.clock = later
    sending.server, sending.clock = server, later
    server.start()
    got = sending.sink.next()
    sending.settled(1)
    scheduler_pass(sending)
    with sending.api(key) as api:
        after = api.get(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}").json()
    assert parsed(got.data)["Subject"] == "After restart"
    assert after["status"] == "sent"
    assert sending.sink.empty() and sending.sink.handler.attempts == 1


def deliver_inbound(sending: Sending, subject: str, message_id: str) -> str:
    raw = message(
        ADDRESS, subject, "Question?\n", sender="Alice <alice@remote.test>", message_id=message_id
    )
    with smtplib.SMTP("127.0.0.1", sending.server.smtp_port) as smtp:
        smtp.sendmail("alice@remote.test", [ADDRESS], raw)
    [found] = sending.server.query(
        select(m.messages.c.id).where(m.messages.c.message_id_header == message_id.strip("<>"))
    )
    return str(found.id)


def test_replies_mark_the_original_answered_and_forwards_forwarded(
    sending: Sending, bot: tuple[str, str]
) -> None:
    inbox_id, key = bot
    replied = deliver_inbound(sending, "One", "<one@remote.test>")
    forwarded = deliver_inbound(sending, "Two", "<two@remote.test>")
    drafted = deliver_inbound(sending, "Three", "<three@remote.test>")
    imap = Imap(sending, key)
    assert imap.flags("INBOX") == [b"", b"", b""]
    with sending.api(key) as api:
        base = f"/inboxes/{inbox_id}/messages"
        api.post(f"{base}/{replied}/reply", json={"text": "Yes."}).raise_for_status()
        api.post(f"{base}/{forwarded}/forward", json={"to": "eve@remote.test"}).raise_for_status()
        draft = api.post(
            f"/inboxes/{inbox_id}/drafts", json={"in_reply_to": drafted, "text": "Later."}
        ).json()
        untouched = imap.flags("INBOX")
        api.post(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}/send").raise_for_status()
        got = [sending.sink.next() for _ in range(3)]
        labels = api.get(f"{base}/{forwarded}").json()["labels"]
    final = imap.flags("INBOX")
    imap.close()
    assert draft["subject"] == "Re: Three" and draft["to"] == ["Alice <alice@remote.test>"]
    assert draft["in_reply_to"] == drafted
    assert untouched == [b"\\Answered", b"$Forwarded", b""]  # a draft is not an answer yet
    assert final == [b"\\Answered", b"$Forwarded", b"\\Answered"]
    assert labels == ["$Forwarded"]
    reply = next(parsed(g.data) for g in got if parsed(g.data)["Subject"] == "Re: Three")
    assert reply["In-Reply-To"] == "<three@remote.test>"
    assert reply["References"] == "<three@remote.test>"


def test_a_draft_appended_over_imap_is_a_draft_of_the_api(
    sending: Sending, bot: tuple[str, str]
) -> None:
    inbox_id, key = bot
    imap = Imap(sending, key)
    saved = message(
        "alice@remote.test", "From my client", "Typed in a mail client.\n", sender=ADDRESS
    )
    other = message("bob@remote.test", "Thrown away", "never mind\n", sender=ADDRESS)
    for raw in (saved, other):
        typ, _ = imap.client.append("Drafts", "(\\Draft \\Seen)", None, raw)
        assert typ == "OK"
    imap.client.select("Drafts")
    imap.client.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    imap.client.expunge()
    with sending.api(key) as api:
        [draft] = api.get(f"/inboxes/{inbox_id}/drafts").json()["drafts"]
        sent = api.post(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}/send")
        got = sending.sink.next()
    assert imap.folder("Drafts") == []
    imap.close()
    assert draft["subject"] == "From my client" and draft["to"] == ["alice@remote.test"]
    assert sent.status_code == 200, sent.text
    assert got.rcpt_tos == ("alice@remote.test",) and b"Typed in a mail client." in got.data
    sending.settled(1)
    assert [e.message_id for e in sending.events("message.sent")] == [sent.json()["message_id"]]
    assert [r.status for r in drafts_in_store(sending)] == ["sent"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_send_each_due_draft_once(tmp_path: Path, database_url: str) -> None:
    sending = start_sending(tmp_path, database_url)
    ports = {"http_port": free_port(), "smtp_port": free_port()}
    second = ServerThread(
        sending.server.settings.model_copy(update=ports), resolver=FakeResolver(routes())
    )
    second.app.clock = sending.clock
    try:
        second.start()
        inbox, key = sending.inbox(ADDRESS)
        subjects = [f"Due {i}" for i in range(12)]
        with sending.api(key) as api:
            for subject in subjects:
                body = {"to": "alice@remote.test", "subject": subject, "send_at": iso(sending, 60)}
                assert api.post(f"/inboxes/{inbox.id}/drafts", json=body).status_code == 201
        sending.clock.advance(120)
        for server in (sending.server, second):
            assert server.app.drafts is not None
            server.app.drafts.wake()
        got = sorted(str(parsed(sending.sink.next().data)["Subject"]) for _ in subjects)
        for server in (sending.server, second):
            assert server.app.drafts is not None
            server.call(server.app.drafts.look_now())
        assert got == sorted(subjects)
        assert sending.sink.empty()
        assert len(sending.server.query(select(m.outbound_messages.c.id))) == len(subjects)
        assert {r.status for r in drafts_in_store(sending)} == {"sent"}
    finally:
        try:
            second.stop()
        finally:
            sending.stop()


def test_a_draft_joins_its_conversation_only_when_sent(
    sending: Sending, bot: tuple[str, str]
) -> None:
    inbox_id, key = bot
    original = deliver_inbound(sending, "Plans", "<plans@remote.test>")
    imap = Imap(sending, key)
    saved = message("carol@remote.test", "Re: Plans", "from my client\n", sender=ADDRESS)
    saved = saved.replace(b"Subject:", b"In-Reply-To: <plans@remote.test>\r\nSubject:")
    assert imap.client.append("Drafts", "(\\Draft \\Seen)", None, saved)[0] == "OK"
    imap.close()
    with sending.api(key) as api:
        [thread] = api.get(f"/inboxes/{inbox_id}/threads").json()["threads"]

        def shown() -> tuple[int, list[str]]:
            found = api.get(f"/threads/{thread['thread_id']}").json()
            people = sorted(p["email"] for p in found["participants"])
            return found["message_count"], people

        alone = shown()
        draft = api.post(
            f"/inboxes/{inbox_id}/drafts",
            json={"in_reply_to": original, "cc": ["dave@remote.test"], "text": "Soon."},
        ).json()
        api.patch(
            f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}", json={"text": "Tomorrow."}
        ).raise_for_status()
        drafted = shown()
        sent = api.post(f"/inboxes/{inbox_id}/drafts/{draft['draft_id']}/send").json()
        sending.sink.next()
        after = shown()
        threads = api.get(f"/inboxes/{inbox_id}/threads").json()["threads"]
    assert alone == (1, ["alice@remote.test", ADDRESS])
    assert drafted == alone  # neither draft (the API's, the client's) counts yet
    assert sent["thread_id"] == thread["thread_id"]
    assert after == (2, ["alice@remote.test", ADDRESS, "dave@remote.test"])
    assert [t["thread_id"] for t in threads] == [thread["thread_id"]]  # no draft-only thread
