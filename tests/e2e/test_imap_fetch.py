"""FETCH against the running server: every item, byte-exact bodies from the blob store,
\\Seen on non-PEEK reads, UID FETCH, partials, sections, errors."""

from __future__ import annotations

import base64
import datetime
import imaplib
import smtplib
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import compat32

import pytest
from imapclient import IMAPClient

from harness import ImapLine, ServerThread

ADDRESS = "bot@example.test"


@pytest.fixture
def key(server: ServerThread) -> str:
    inbox = server.create_inbox(ADDRESS)
    return server.create_key(inbox.account_id)


@pytest.fixture
def client(server: ServerThread, key: str) -> Iterator[IMAPClient]:
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as connection:
        connection.login(ADDRESS, key)
        yield connection


def nested_message() -> bytes:
    inner = EmailMessage()
    inner["From"] = "Dave <dave@example.test>"
    inner["Subject"] = "Inner"
    inner.set_content("Inner text.\n")
    outer = EmailMessage()
    outer["From"] = "Alice <alice@example.test>"
    outer["To"] = "Bob <bob@example.test>"
    outer["Cc"] = "carol@example.test"
    outer["Subject"] = "=?utf-8?q?Gr=C3=BC=C3=9Fe?="
    outer["Message-ID"] = "<nested@example.test>"
    outer["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    outer.set_content("Plain body.\n")
    outer.add_alternative("<p>HTML body.</p>\n", subtype="html")
    outer.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    outer.add_attachment(inner)
    return bytes(outer).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


WHEN = datetime.datetime(2024, 3, 5, 12, 30, 0, tzinfo=datetime.UTC)


def test_fetch_items_of_an_appended_message(client: IMAPClient) -> None:
    raw = nested_message()
    client.append("INBOX", raw, flags=["$Work"], msg_time=WHEN)
    client.select_folder("INBOX")
    [uid] = client.search("ALL")
    data = client.fetch(
        [uid], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]"]
    )[uid]
    assert data[b"BODY[]"] == raw
    assert data[b"RFC822.SIZE"] == len(raw)
    assert data[b"FLAGS"] == (b"$Work",)
    assert data[b"INTERNALDATE"].replace(tzinfo=None) == WHEN.replace(tzinfo=None)
    envelope = data[b"ENVELOPE"]
    assert envelope.subject == b"=?utf-8?q?Gr=C3=BC=C3=9Fe?="
    assert envelope.message_id == b"<nested@example.test>"
    assert [(a.name, a.mailbox, a.host) for a in envelope.from_] == [
        (b"Alice", b"alice", b"example.test")
    ]
    assert envelope.sender == envelope.from_
    assert envelope.cc[0].mailbox == b"carol"
    structure = data[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    parts, subtype = structure[0], structure[1]
    assert subtype == b"mixed"
    assert len(parts) == 3
    assert parts[1][:2] == (b"application", b"pdf")
    assert parts[2][:2] == (b"message", b"rfc822")


def test_a_large_message_appended_and_fetched_by_part(client: IMAPClient) -> None:
    # Above the size parsed inline: APPEND and the section FETCH parse it in a worker process.
    photo = bytes(range(256)) * 1024  # 256 KiB
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["Subject"] = "Photos"
    msg.set_content("Two photos.\n")
    msg.add_attachment(photo, maintype="image", subtype="jpeg", filename="a.jpg")
    msg.add_attachment(photo[::-1], maintype="image", subtype="jpeg", filename="b.jpg")
    raw = bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    client.append("INBOX", raw)
    client.select_folder("INBOX")
    [uid] = client.search("ALL")
    data = client.fetch([uid], ["BODYSTRUCTURE", "BODY.PEEK[]", "BODY.PEEK[3]"])[uid]
    assert data[b"BODY[]"] == raw
    assert [part[:2] for part in data[b"BODYSTRUCTURE"][0]] == [
        (b"text", b"plain"),
        (b"image", b"jpeg"),
        (b"image", b"jpeg"),
    ]
    assert base64.b64decode(data[b"BODY[3]"]) == photo[::-1]


def test_sections_are_byte_exact(client: IMAPClient) -> None:
    raw = nested_message()
    client.append("INBOX", raw)
    client.select_folder("INBOX")
    parsed = message_from_bytes(raw, policy=compat32)
    data = client.fetch(
        [1],
        [
            "BODY.PEEK[HEADER]",
            "BODY.PEEK[TEXT]",
            "BODY.PEEK[1.1]",
            "BODY.PEEK[1.2.MIME]",
            "BODY.PEEK[3.HEADER]",
            "BODY.PEEK[3.1]",
            "BODY.PEEK[HEADER.FIELDS (Subject To)]",
            "BODY.PEEK[]<0.10>",
            "RFC822.HEADER",
        ],
    )[1]
    header, _, text = raw.partition(b"\r\n\r\n")
    assert data[b"BODY[HEADER]"] == header + b"\r\n\r\n"
    assert data[b"BODY[TEXT]"] == text
    assert data[b"BODY[1.1]"] == parsed.get_payload()[0].get_payload()[0].get_payload().encode()
    assert data[b"BODY[1.2.MIME]"].startswith(b"Content-Type: text/html")
    assert data[b"BODY[3.HEADER]"].startswith(b"From: Dave")
    assert data[b"BODY[3.1]"] == b"Inner text.\r\n"
    assert data[b"BODY[HEADER.FIELDS (SUBJECT TO)]"] == (
        b"To: Bob <bob@example.test>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n"
    )
    assert data[b"BODY[]<0>"] == raw[:10]
    assert data[b"RFC822.HEADER"] == header + b"\r\n\r\n"


def test_smtp_delivered_message_is_byte_exact(server: ServerThread, client: IMAPClient) -> None:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = ADDRESS
    message["Subject"] = "Delivered"
    message.set_content("Hello over SMTP.\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.send_message(message)
    client.select_folder("INBOX")
    data = client.fetch([1], ["BODY.PEEK[]", "RFC822.SIZE"])[1]
    assert data[b"BODY[]"].startswith(b"Received: from ")
    assert data[b"BODY[]"].endswith(b"Hello over SMTP.\r\n")
    assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"])


def test_peek_keeps_unseen_and_body_sets_seen(server: ServerThread, key: str) -> None:
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        client.login(ADDRESS, key)
        client.append("INBOX", nested_message())
        client.append("INBOX", nested_message())
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.command("a1", f"LOGIN {ADDRESS} {key}")
    conn.command("a2", "SELECT INBOX")
    lines = conn.command("a3", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] FLAGS)")
    assert b"FLAGS ()" in b"".join(lines)
    lines = conn.command("a4", "FETCH 1 (BODY[HEADER.FIELDS (MESSAGE-ID)])")
    assert lines[0] == b"* 1 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] {37}\r\n"
    assert lines[1] == b"Message-ID: <nested@example.test>\r\n"
    assert lines[3] == b" FLAGS (\\Seen))\r\n"
    lines = conn.command("a5", "FETCH 1:2 (FLAGS)")
    assert lines[:2] == [b"* 1 FETCH (FLAGS (\\Seen))\r\n", b"* 2 FETCH (FLAGS ())\r\n"]
    lines = conn.command("a6", "UID FETCH 2 (RFC822.SIZE)")
    assert lines[0].startswith(b"* 2 FETCH (UID 2 RFC822.SIZE ")
    conn.command("a7", "EXAMINE INBOX")
    lines = conn.command("a8", "FETCH 2 (BODY[1.1])")
    assert b"FLAGS" not in b"".join(lines)  # read-only: \Seen is not set
    conn.close()


def test_fetch_macros_and_errors(server: ServerThread, key: str) -> None:
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        client.login(ADDRESS, key)
        client.append("INBOX", nested_message())
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.command("a1", f"LOGIN {ADDRESS} {key}")
    conn.command("a2", "SELECT INBOX")
    lines = conn.command("a3", "FETCH 1 FAST")
    assert lines[0].startswith(b'* 1 FETCH (FLAGS () INTERNALDATE "')
    assert conn.command("a4", "FETCH 5 FLAGS") == [b"a4 BAD Invalid message sequence number\r\n"]
    assert conn.command("a5", "UID FETCH 5:9 FLAGS") == [b"a5 OK FETCH completed\r\n"]
    assert conn.command("a6", "FETCH 1 (BINARY.PEEK[1])")[0].startswith(b"* 1 FETCH (BINARY[1] {")
    lines = conn.command("a7", "FETCH 1 (BODY)")
    assert lines[0].startswith(b'* 1 FETCH (BODY ((("text" "plain" ("charset" "utf-8") NIL NIL')
    assert conn.command("a8", "FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].startswith(
        b"a8 BAD "
    )
    conn.close()


def test_imaplib_rfc822_fetch(server: ServerThread, key: str) -> None:
    raw = nested_message()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    client.login(ADDRESS, key)
    client.append("INBOX", "", imaplib.Time2Internaldate(WHEN), raw)
    client.select("INBOX")
    typ, data = client.fetch("1", "(RFC822)")
    assert typ == "OK"
    assert data[0][1] == raw
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    client.logout()
