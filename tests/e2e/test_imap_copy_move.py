"""COPY, MOVE, EXPUNGE and UID EXPUNGE against the running server (RFC 3501 §6.4.3, §6.4.7;
RFC 4315 UIDPLUS; RFC 6851 MOVE)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from mailboxkit.store import models as m

from harness import ImapLine, ServerThread

ADDRESS = "bot@example.test"


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


@pytest.fixture
def conn(server: ServerThread) -> Iterator[ImapLine]:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    line = ImapLine(server.imap_port)
    line.read()
    line.command("l", f"LOGIN {ADDRESS} {key}")
    for i in range(1, 6):
        data = message(i)
        line.send(b"a%d APPEND INBOX (\\Flagged) {%d+}\r\n" % (i, len(data)) + data + b"\r\n")
        line.until_tagged(f"a{i}")
    line.command("s", "SELECT INBOX")
    yield line
    line.close()


def test_copy_with_copyuid_keeps_flags(conn: ImapLine) -> None:
    status = conn.command("c1", "STATUS Archive (UIDVALIDITY)")[0]
    uidvalidity = status.split(b"UIDVALIDITY ")[1].rstrip(b")\r\n")
    lines = conn.command("c2", "COPY 2:3,5 Archive")
    assert lines == [b"c2 OK [COPYUID " + uidvalidity + b" 2:3,5 1:3] COPY completed\r\n"]
    lines = conn.command("c3", "UID COPY 1 Archive")
    assert lines == [b"c3 OK [COPYUID " + uidvalidity + b" 1 4] COPY completed\r\n"]
    conn.command("c4", "EXAMINE Archive")
    lines = conn.command("c5", "FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Flagged) BODY[")
    assert lines[1] == b"Subject: message 2\r\n"
    assert conn.command("c6", "COPY 1 Nowhere") == [b"c6 NO [TRYCREATE] Mailbox does not exist\r\n"]
    assert conn.command("c7", "UID COPY 99 Trash") == [b"c7 OK COPY completed\r\n"]


def test_move_sends_copyuid_then_expunges(server: ServerThread, conn: ImapLine) -> None:
    lines = conn.command("m1", "MOVE 2:3 Trash")
    assert lines[0].startswith(b"* OK [COPYUID ")
    assert lines[0].endswith(b" 2:3 1:2] Moved\r\n")
    assert lines[1:] == [b"* 3 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n", b"m1 OK MOVE completed\r\n"]
    lines = conn.command("m2", "UID MOVE 5 Trash")
    assert lines[1:] == [b"* 3 EXPUNGE\r\n", b"m2 OK MOVE completed\r\n"]
    assert conn.command("m3", "FETCH 1:* (UID)")[:2] == [
        b"* 1 FETCH (UID 1)\r\n",
        b"* 2 FETCH (UID 4)\r\n",
    ]
    assert conn.command("m4", "STATUS Trash (MESSAGES UIDNEXT)")[0] == (
        b'* STATUS "Trash" (MESSAGES 3 UIDNEXT 4)\r\n'
    )
    count = server.query(select(func.count()).select_from(m.messages))[0][0]
    assert count == 5  # moved, not copied


def test_expunge_and_uid_expunge(server: ServerThread, conn: ImapLine) -> None:
    conn.command("e1", "STORE 1,3,4 +FLAGS.SILENT (\\Deleted)")
    assert conn.command("e2", "UID EXPUNGE 3:4") == [
        b"* 4 EXPUNGE\r\n",
        b"* 3 EXPUNGE\r\n",
        b"e2 OK EXPUNGE completed\r\n",
    ]
    assert conn.command("e3", "EXPUNGE") == [b"* 1 EXPUNGE\r\n", b"e3 OK EXPUNGE completed\r\n"]
    assert conn.command("e4", "EXPUNGE") == [b"e4 OK EXPUNGE completed\r\n"]
    assert conn.command("e5", "SEARCH ALL") == [b"* SEARCH 1 2\r\n", b"e5 OK SEARCH completed\r\n"]
    count = server.query(select(func.count()).select_from(m.messages))[0][0]
    assert count == 2  # messages in no folder any more are gone
    expunged = server.query(select(m.folder_expunges.c.uid).order_by(m.folder_expunges.c.uid))
    assert [row.uid for row in expunged] == [1, 3, 4]
