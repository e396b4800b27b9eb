"""APPEND against the running server: APPENDUID once durable, flags and dates, MULTIAPPEND,
LITERAL+, TRYCREATE, the APPENDLIMIT, and the message rows and blobs it leaves."""

from __future__ import annotations

import datetime
import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailboxkit.store import models as m

from harness import ImapLine, ServerThread, free_port, server_settings

ADDRESS = "bot@example.test"
MESSAGE = b"From: a@example.test\r\nSubject: appended\r\n\r\nbody\r\n"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerThread]:
    settings = server_settings(
        tmp_path / "data",
        database_url,
        imap_port=free_port(),
        imap_auth_failure_delay=0,
        imap_max_literal_size=1000,
        imap_max_command_size=4000,
    )
    running = ServerThread(settings)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def key(server: ServerThread) -> str:
    inbox = server.create_inbox(ADDRESS)
    return server.create_key(inbox.account_id)


@pytest.fixture
def conn(server: ServerThread, key: str) -> Iterator[ImapLine]:
    line = ImapLine(server.imap_port)
    line.read()
    line.command("l", f"LOGIN {ADDRESS} {key}")
    yield line
    line.close()


def test_append_is_durable_before_appenduid(server: ServerThread, key: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    client.login(ADDRESS, key)
    when = imaplib.Time2Internaldate(datetime.datetime(2023, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
    typ, data = client.append("Drafts", "(\\Draft $Later)", when, MESSAGE)
    assert typ == "OK"
    assert data[0].startswith(b"[APPENDUID ")
    assert data[0].endswith(b" 1] APPEND completed")
    client.logout()
    [row] = server.query(
        select(
            m.messages.c.raw_key, m.messages.c.direction, m.entries.c.draft, m.entries.c.keywords
        ).select_from(m.entries.join(m.messages, m.messages.c.id == m.entries.c.message_id))
    )
    assert server.blob(row.raw_key) == MESSAGE
    assert row.direction == "outbound"  # filed into \Drafts
    assert row.draft is True
    assert row.keywords == ["$Later"]


def test_append_exact_transcript_with_literal_plus_and_multiappend(conn: ImapLine) -> None:
    conn.send(b"a1 APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert conn.read() == b"+ Ready for literal data\r\n"
    conn.send(MESSAGE + b"\r\n")
    lines = conn.until_tagged("a1")
    assert lines[-1].endswith(b" 1] APPEND completed\r\n")
    two = b"a2 APPEND INBOX (\\Seen) {%d+}\r\n%s {%d+}\r\n%s\r\n" % (
        len(MESSAGE),
        MESSAGE,
        len(MESSAGE),
        MESSAGE,
    )
    conn.send(two)
    assert conn.until_tagged("a2")[-1].endswith(b" 2:3] APPEND completed\r\n")
    lines = conn.command("a3", "STATUS INBOX (MESSAGES UNSEEN)")
    assert lines[0] == b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2)\r\n'


def test_append_errors(conn: ImapLine) -> None:
    conn.send(b"a1 APPEND Nowhere {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    assert conn.until_tagged("a1") == [b"a1 NO [TRYCREATE] Mailbox does not exist\r\n"]
    conn.send(b"a2 APPEND INBOX {5000}\r\n")  # over APPENDLIMIT: refused before any octet
    assert conn.read() == b"a2 NO [TOOBIG] Literal too big\r\n"
    conn.send(b"a3 APPEND INBOX (\\Bogus) {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    assert conn.until_tagged("a3")[-1].startswith(b"a3 NO ")
    lines = conn.command("a4", "STATUS INBOX (MESSAGES APPENDLIMIT)")
    assert lines[0] == b'* STATUS "INBOX" (MESSAGES 0 APPENDLIMIT 1000)\r\n'


def test_append_to_selected_mailbox_reports_exists(conn: ImapLine) -> None:
    conn.command("s", "SELECT INBOX")
    conn.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    lines = conn.until_tagged("a1")
    assert lines[0] == b"* 1 EXISTS\r\n"
    assert lines[-1].startswith(b"a1 OK [APPENDUID ")
