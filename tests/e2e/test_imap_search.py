"""SEARCH, UID SEARCH and ESEARCH against the running server: every key, in SQL and in the
Python fallback, CHARSET, RETURN options and MODSEQ (RFC 3501 §6.4.4, RFC 4731, RFC 7162)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from harness import ImapLine, ServerThread

ADDRESS = "bot@example.test"

MESSAGES = [
    (
        "(\\Seen)",
        "15-Jan-2024 10:00:00 +0000",
        b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
        b"Subject: Invoice 42\r\nDate: Wed, 10 Jan 2024 09:00:00 +0000\r\n\r\n"
        b"Please pay the invoice.\r\n",
    ),
    (
        "(\\Flagged $Work)",
        "01-Feb-2024 10:00:00 +0000",
        "From: Bob <bob@example.test>\r\nCc: carol@example.test\r\n"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
        "Date: Thu, 01 Feb 2024 09:00:00 +0000\r\nX-Custom: yes\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Hallo Welt, schöne Grüße.\r\n".encode(),
    ),
    (
        "(\\Deleted)",
        "01-Mar-2024 10:00:00 +0000",
        b"From: dave@example.test\r\nSubject: short\r\n\r\nx\r\n",
    ),
]


@pytest.fixture
def conn(server: ServerThread) -> Iterator[ImapLine]:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    line = ImapLine(server.imap_port)
    line.read()
    line.command("l", f"LOGIN {ADDRESS} {key}")
    for i, (flags, date, data) in enumerate(MESSAGES):
        line.send(
            f'a{i} APPEND INBOX {flags} "{date}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n"
        )
        assert line.until_tagged(f"a{i}")[-1].startswith(f"a{i} OK".encode())
    line.command("s", "SELECT INBOX")
    yield line
    line.close()


def search(conn: ImapLine, criteria: str | bytes) -> list[int]:
    query = criteria.encode() if isinstance(criteria, str) else criteria
    lines = conn.command("q", b"SEARCH " + query)
    assert lines[-1] == b"q OK SEARCH completed\r\n", lines
    [result] = [line for line in lines if line.startswith(b"* SEARCH")]
    return [int(n) for n in re.findall(rb" (\d+)", result.split(b"(MODSEQ")[0])]


CASES = [
    ("ALL", [1, 2, 3]),
    ("SEEN", [1]),
    ("UNSEEN", [2, 3]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 3]),
    ("DELETED", [3]),
    ("UNDELETED", [1, 2]),
    ("ANSWERED", []),
    ("UNANSWERED", [1, 2, 3]),
    ("DRAFT", []),
    ("UNDRAFT", [1, 2, 3]),
    ("KEYWORD $Work", [2]),
    ("KEYWORD $work", [2]),
    ("UNKEYWORD $Work", [1, 3]),
    ("NEW", []),
    ("RECENT", []),
    ("OLD", [1, 2, 3]),
    ("FROM alice", [1]),
    ('FROM "bob@example"', [2]),
    ("TO bob", [1]),
    ("CC carol", [2]),
    ("BCC carol", []),
    ("SUBJECT invoice", [1]),
    ("SUBJECT INVOICE", [1]),
    ("HEADER X-Custom yes", [2]),
    ('HEADER X-Custom ""', [2]),
    ("HEADER Message-ID nothing", []),
    ("BODY pay", [1]),
    ("BODY Invoice", [1]),
    ("TEXT 42", [1]),
    ("TEXT welt", [2]),
    ("BEFORE 1-Feb-2024", [1]),
    ("ON 1-Feb-2024", [2]),
    ("SINCE 1-Feb-2024", [2, 3]),
    ("SENTBEFORE 1-Feb-2024", [1]),
    ("SENTON 1-Feb-2024", [2]),
    ("SENTSINCE 1-Jan-2000", [1, 2]),
    ("NOT SENTSINCE 1-Jan-2000", [3]),
    ("LARGER 100", [1, 2]),
    ("SMALLER 100", [3]),
    ("UID 2:*", [2, 3]),
    ("2:3", [2, 3]),
    ("*", [3]),
    ("NOT SEEN", [2, 3]),
    ("OR SEEN FLAGGED", [1, 2]),
    ("NOT FROM alice", [2, 3]),
    ("NOT HEADER X-Custom yes", [1, 3]),
    ("OR HEADER X-Custom yes SEEN", [1, 2]),
    ("(SEEN UNDELETED) SUBJECT invoice", [1]),
    ("UNDELETED NOT BCC x HEADER X-Custom yes", [2]),
    ("MODSEQ 1", [1, 2, 3]),
]
"""(criteria, sequence numbers found): one server for the whole table."""


def test_search_keys(conn: ImapLine) -> None:
    for criteria, expected in CASES:
        assert search(conn, criteria) == expected, criteria


def test_utf8_search_strings(conn: ImapLine) -> None:
    word = "köln".encode()
    query = b"CHARSET UTF-8 SUBJECT {%d+}\r\n%s" % (len(word), word)
    assert search(conn, query) == [2]
    word = "GRÜSSE".encode()  # full case folding: ß is ss
    assert search(conn, b"CHARSET UTF-8 BODY {%d+}\r\n%s" % (len(word), word)) == [2]
    word = "Köln".encode()  # only in the subject
    assert search(conn, b"CHARSET UTF-8 BODY {%d+}\r\n%s" % (len(word), word)) == []
    word = "grüße".encode()
    assert search(conn, b"CHARSET UTF-8 TEXT {%d+}\r\n%s" % (len(word), word)) == [2]


def test_unsupported_charset(conn: ImapLine) -> None:
    assert conn.command("q", "SEARCH CHARSET ISO-2022-JP ALL") == [
        b"q NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n"
    ]


def test_uid_search_and_esearch(conn: ImapLine) -> None:
    assert conn.command("q1", "UID SEARCH FLAGGED")[0] == b"* SEARCH 2\r\n"
    lines = conn.command("q2", "UID SEARCH RETURN (MIN MAX COUNT) ALL")
    assert lines[0] == b'* ESEARCH (TAG "q2") UID MIN 1 MAX 3 COUNT 3\r\n'
    lines = conn.command("q3", "SEARCH RETURN () UNSEEN")
    assert lines[0] == b'* ESEARCH (TAG "q3") ALL 2:3\r\n'
    lines = conn.command("q4", "SEARCH RETURN (COUNT MIN) KEYWORD nothing")
    assert lines[0] == b'* ESEARCH (TAG "q4") COUNT 0\r\n'
    lines = conn.command("q5", "SEARCH RETURN (ALL) MODSEQ 1")
    assert re.fullmatch(rb'\* ESEARCH \(TAG "q5"\) ALL 1:3 MODSEQ \d+\r\n', lines[-2])


def test_search_modseq_reports_highest(conn: ImapLine) -> None:
    lines = conn.command("q1", "SEARCH MODSEQ 1")
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ ")
    assert re.fullmatch(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)\r\n", lines[1])
    assert conn.command("q2", "SEARCH 9")[-1].startswith(b"q2 BAD ")
