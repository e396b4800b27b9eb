"""CONDSTORE and QRESYNC against the running server: SELECT (CONDSTORE), FETCH CHANGEDSINCE,
SELECT (QRESYNC ...) with VANISHED (EARLIER), UID FETCH ... (CHANGEDSINCE n VANISHED),
the CLOSED response, HIGHESTMODSEQ in STATUS (RFC 7162)."""

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
    for i in range(4):
        line.send(f"a{i} APPEND INBOX {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE + b"\r\n")
        line.until_tagged(f"a{i}")
    yield line
    line.close()


def number(pattern: bytes, lines: list[bytes]) -> int:
    match = re.search(pattern, b"".join(lines))
    assert match, lines
    return int(match.group(1))


def test_select_condstore_and_changedsince(conn: ImapLine) -> None:
    lines = conn.command("s", "SELECT INBOX (CONDSTORE)")
    base = number(rb"\[HIGHESTMODSEQ (\d+)\]", lines)
    assert lines[-1] == b"s OK [READ-WRITE] SELECT completed\r\n"
    conn.command("t1", "STORE 2,4 +FLAGS.SILENT (\\Seen)")
    lines = conn.command("f1", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {base})")
    assert [line[:27] for line in lines[:-1]] == [
        b"* 2 FETCH (FLAGS (\\Seen) MO",
        b"* 4 FETCH (FLAGS (\\Seen) MO",
    ]
    after = number(rb"MODSEQ \((\d+)\)", lines[:1])
    assert after > base
    lines = conn.command("f2", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {after})")
    assert lines == [b"f2 OK FETCH completed\r\n"]
    status = conn.command("st", "STATUS INBOX (HIGHESTMODSEQ)")[0]
    assert status == f'* STATUS "INBOX" (HIGHESTMODSEQ {after})\r\n'.encode()


def test_qresync_select_reports_vanished_and_changes(conn: ImapLine) -> None:
    conn.command("e", "ENABLE QRESYNC")
    lines = conn.command("s1", "SELECT INBOX")
    uidvalidity = number(rb"\[UIDVALIDITY (\d+)\]", lines)
    base = number(rb"\[HIGHESTMODSEQ (\d+)\]", lines)
    conn.command("t1", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    conn.command("t2", "UID STORE 3 +FLAGS (\\Flagged)")
    lines = conn.command("x", "EXPUNGE")
    assert lines == [b"* VANISHED 1\r\n", b"x OK EXPUNGE completed\r\n"]
    lines = conn.command("s2", f"SELECT INBOX (QRESYNC ({uidvalidity} {base} 1:4))")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed\r\n"
    assert b"* VANISHED (EARLIER) 1\r\n" in lines
    changed = [line for line in lines if b"FETCH" in line]
    assert len(changed) == 1
    assert changed[0].startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (")
    lines = conn.command("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {base} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 1\r\n"
    assert lines[1].startswith(b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (")
    stale = conn.command("s3", f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {base}))")
    assert not any(b"VANISHED" in line for line in stale)  # other UIDVALIDITY: full resync


def test_qresync_needs_enable(conn: ImapLine) -> None:
    lines = conn.command("s", "SELECT INBOX (QRESYNC (1 1))")
    assert lines == [b"s BAD Enable QRESYNC first\r\n"]
    conn.command("s2", "SELECT INBOX")
    lines = conn.command("f", "UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")
    assert lines == [b"f BAD Enable QRESYNC first\r\n"]
