"""STORE against the running server: +FLAGS, -FLAGS, FLAGS, .SILENT, keywords and the FLAGS
update they cause, UNCHANGEDSINCE with MODIFIED, read-only mailboxes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from harness import ImapLine, ServerThread

ADDRESS = "bot@example.test"
MESSAGE = b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def conn(server: ServerThread) -> Iterator[ImapLine]:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    line = ImapLine(server.imap_port)
    line.read()
    line.command("l", f"LOGIN {ADDRESS} {key}")
    for i in range(3):
        line.send(b"a%d APPEND INBOX {%d+}\r\n" % (i, len(MESSAGE)) + MESSAGE + b"\r\n")
        assert line.until_tagged(f"a{i}")[-1].startswith(f"a{i} OK [APPENDUID ".encode())
    line.command("s", "SELECT INBOX")
    yield line
    line.close()


def test_add_remove_replace(conn: ImapLine) -> None:
    assert conn.command("t1", "STORE 1:2 +FLAGS (\\Seen \\Flagged)") == [
        b"* 1 FETCH (FLAGS (\\Seen \\Flagged))\r\n",
        b"* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n",
        b"t1 OK STORE completed\r\n",
    ]
    assert conn.command("t2", "STORE 1 -FLAGS (\\Seen)") == [
        b"* 1 FETCH (FLAGS (\\Flagged))\r\n",
        b"t2 OK STORE completed\r\n",
    ]
    assert conn.command("t3", "UID STORE 2 FLAGS (\\Answered)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Answered))\r\n",
        b"t3 OK STORE completed\r\n",
    ]
    assert conn.command("t4", "STORE 3 +FLAGS.SILENT (\\Deleted)") == [b"t4 OK STORE completed\r\n"]
    assert conn.command("t5", "FETCH 1:3 FLAGS")[:3] == [
        b"* 1 FETCH (FLAGS (\\Flagged))\r\n",
        b"* 2 FETCH (FLAGS (\\Answered))\r\n",
        b"* 3 FETCH (FLAGS (\\Deleted))\r\n",
    ]


def test_keywords_announce_new_flags(conn: ImapLine) -> None:
    lines = conn.command("t1", "STORE 1 +FLAGS ($Label1 Work)")
    assert lines == [
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Label1 Work)\r\n",
        b"* 1 FETCH (FLAGS ($Label1 Work))\r\n",
        b"t1 OK STORE completed\r\n",
    ]
    lines = conn.command("t2", "STORE 1 -FLAGS (work)")  # keywords are case-insensitive
    assert lines[0] == b"* 1 FETCH (FLAGS ($Label1))\r\n"
    assert conn.command("t3", "STORE 1 +FLAGS (\\Recent)")[-1] == b"t3 OK STORE completed\r\n"
    assert conn.command("t4", "STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"t4 NO ")


def test_unchanged_since(conn: ImapLine) -> None:
    lines = conn.command("t1", "FETCH 1:3 (MODSEQ)")
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ ")  # CONDSTORE enabled by use
    modseqs = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", b"".join(lines))]
    assert len(modseqs) == 3
    lines = conn.command("t2", "STORE 2 +FLAGS (\\Seen)")
    assert lines[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (")
    changed = int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))  # type: ignore[union-attr]
    assert changed > max(modseqs)
    lines = conn.command("t3", f"STORE 1:3 (UNCHANGEDSINCE {max(modseqs)}) +FLAGS (\\Flagged)")
    assert lines[-1] == b"t3 OK [MODIFIED 2] STORE completed\r\n"
    fetched = b"".join(conn.command("t4", "FETCH 1:3 FLAGS"))
    assert b"* 2 FETCH (FLAGS (\\Seen))" in fetched  # no MODSEQ unless asked (RFC 7162 §3.1)
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in fetched
    lines = conn.command("t5", "UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS.SILENT (\\Draft)")
    assert lines == [b"t5 OK [MODIFIED 1] STORE completed\r\n"]
    lines = conn.command(
        "t6", f"UID STORE 3 (UNCHANGEDSINCE {changed + 10}) -FLAGS.SILENT (\\Flagged)"
    )
    assert re.fullmatch(rb"\* 3 FETCH \(UID 3 MODSEQ \(\d+\)\)\r\n", lines[0])  # RFC 7162 §3.1.3
    assert lines[-1] == b"t6 OK STORE completed\r\n"


def test_read_only_refuses_store(conn: ImapLine) -> None:
    conn.command("e", "EXAMINE INBOX")
    assert conn.command("t1", "STORE 1 +FLAGS (\\Seen)") == [
        b"t1 NO [READ-ONLY] Mailbox is read-only\r\n"
    ]
    assert conn.command("t2", "EXPUNGE")[-1].startswith(b"t2 NO [READ-ONLY]")
