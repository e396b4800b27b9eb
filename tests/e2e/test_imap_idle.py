"""IDLE and unsolicited updates against the running server: EXISTS after SMTP delivery,
FETCH FLAGS and EXPUNGE after another connection's changes, the no-EXPUNGE-during-FETCH
rule, a deleted selected mailbox (RFC 2177, RFC 3501 §7). Every wait reads the protocol."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import pytest
from imapclient import IMAPClient

from harness import ImapLine, ServerThread, free_port, server_settings

ADDRESS = "bot@example.test"
MESSAGE = b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def key(server: ServerThread) -> str:
    inbox = server.create_inbox(ADDRESS)
    return server.create_key(inbox.account_id)


def connect(server: ServerThread, key: str, mailbox: str | None = "INBOX") -> ImapLine:
    line = ImapLine(server.imap_port, timeout=10)
    line.read()
    line.command("l", f"LOGIN {ADDRESS} {key}")
    if mailbox is not None:
        line.command("s", f"SELECT {mailbox}")
    return line


def deliver(server: ServerThread) -> None:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = ADDRESS
    message["Subject"] = "Pushed"
    message.set_content("Hi.\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.send_message(message)


def append(conn: ImapLine, tag: str, mailbox: str = "INBOX") -> None:
    conn.send(f"{tag} APPEND {mailbox} {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE + b"\r\n")
    conn.until_tagged(tag)


def test_idle_pushes_delivery_flags_and_expunge(server: ServerThread, key: str) -> None:
    watcher, other = connect(server, key), connect(server, key)
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.read() == b"+ idling\r\n"
    deliver(server)
    delivered = time.monotonic()
    assert watcher.read() == b"* 1 EXISTS\r\n"
    assert time.monotonic() - delivered < 1.0
    assert other.command("o0", "NOOP")[0] == b"* 1 EXISTS\r\n"  # the other session learns too
    other.command("o1", "STORE 1 +FLAGS (\\Flagged)")
    assert watcher.read() == b"* 1 FETCH (FLAGS (\\Flagged))\r\n"
    append(other, "o2")
    assert watcher.read() == b"* 2 EXISTS\r\n"
    other.command("o3", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert watcher.read() == b"* 1 FETCH (FLAGS (\\Flagged \\Deleted))\r\n"
    other.command("o4", "EXPUNGE")
    assert watcher.read() == b"* 1 EXPUNGE\r\n"
    watcher.send(b"DONE\r\n")
    assert watcher.read() == b"i1 OK IDLE terminated\r\n"
    assert watcher.command("f", "FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 2)\r\n"
    watcher.close()
    other.close()


def test_idle_with_qresync_reports_vanished(server: ServerThread, key: str) -> None:
    other = connect(server, key)
    append(other, "o1")
    append(other, "o2")
    watcher = connect(server, key, mailbox=None)
    watcher.command("e", "ENABLE QRESYNC")
    watcher.command("s", "SELECT INBOX")
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.read() == b"+ idling\r\n"
    other.command("o3", "UID STORE 2 +FLAGS (\\Seen)")
    line = watcher.read()
    assert line.startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (")
    other.command("o4", "STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert watcher.read().startswith(b"* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (")
    assert watcher.read().startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Deleted) MODSEQ (")
    other.command("o5", "EXPUNGE")
    assert watcher.read() == b"* VANISHED 1:2\r\n"
    watcher.send(b"DONE\r\n")
    assert watcher.read() == b"i1 OK IDLE terminated\r\n"
    watcher.close()
    other.close()


def test_idle_without_a_mailbox_and_a_wrong_continuation(server: ServerThread, key: str) -> None:
    conn = connect(server, key, mailbox=None)
    conn.send(b"i1 IDLE\r\n")
    assert conn.read() == b"+ idling\r\n"
    deliver(server)  # rings the inbox: nothing to report without a selected mailbox
    conn.send(b"DONE\r\n")
    assert conn.read() == b"i1 OK IDLE terminated\r\n"
    conn.send(b"i2 IDLE\r\n")
    conn.read()
    conn.send(b"i3 NOOP\r\n")
    assert conn.read() == b"i2 BAD Expected DONE\r\n"
    conn.close()


def test_updates_follow_commands_and_expunge_waits_after_fetch(
    server: ServerThread, key: str
) -> None:
    other = connect(server, key)
    append(other, "o1")
    append(other, "o2")
    conn = connect(server, key)
    other.command("o3", "STORE 2 +FLAGS (\\Answered)")
    assert conn.command("n1", "NOOP") == [
        b"* 2 FETCH (FLAGS (\\Answered))\r\n",
        b"n1 OK NOOP completed\r\n",
    ]
    other.command("o4", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command("o5", "EXPUNGE")
    lines = conn.command("f1", "FETCH 2 (UID)")  # no EXPUNGE while answering FETCH
    assert lines == [b"* 2 FETCH (UID 2)\r\n", b"f1 OK FETCH completed\r\n"]
    assert conn.command("f2", "FETCH 1 (UID)") == [b"f2 OK FETCH completed\r\n"]
    assert conn.command("n2", "NOOP") == [b"* 1 EXPUNGE\r\n", b"n2 OK NOOP completed\r\n"]
    assert conn.command("f3", "FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 2)\r\n"
    conn.close()
    other.close()


def test_deleted_selected_mailbox_ends_the_session(server: ServerThread, key: str) -> None:
    other = connect(server, key, mailbox=None)
    other.command("c", "CREATE Work")
    conn = connect(server, key, mailbox="Work")
    other.command("d", "DELETE Work")
    conn.send(b"n1 NOOP\r\n")
    assert conn.read() == b"* BYE Selected mailbox was deleted\r\n"
    assert conn.read() == b""
    conn.close()
    other.close()


def test_imapclient_idle(server: ServerThread, key: str) -> None:
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        client.login(ADDRESS, key)
        client.select_folder("INBOX")
        client.idle()
        deliver(server)
        responses = client.idle_check(timeout=10)  # returns as soon as the push arrives
        assert (1, b"EXISTS") in responses
        client.idle_done()


async def test_aioimaplib_idle(server: ServerThread, key: str) -> None:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.imap_port, timeout=10)
    await client.wait_hello_from_server()
    await client.login(ADDRESS, key)
    await client.select("INBOX")
    idle = await client.idle_start(timeout=60)
    await asyncio.to_thread(deliver, server)
    push = await client.wait_server_push(timeout=10)
    assert b"1 EXISTS" in push if isinstance(push, bytes) else "1 EXISTS" in str(push)
    client.idle_done()
    await asyncio.wait_for(idle, 10)
    await client.logout()


def test_shutdown_says_bye_to_idle_sessions(tmp_path: Path, database_url: str) -> None:
    settings = server_settings(
        tmp_path / "data", database_url, imap_port=free_port(), imap_auth_failure_delay=0
    )
    server = ServerThread(settings)
    server.start()
    inbox = server.create_inbox(ADDRESS)
    conn = connect(server, server.create_key(inbox.account_id))
    conn.send(b"i1 IDLE\r\n")
    assert conn.read() == b"+ idling\r\n"
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    assert conn.read() == b"* BYE [UNAVAILABLE] Server shutting down\r\n"
    assert conn.read() == b""
    stopping.join(30)
    conn.close()
