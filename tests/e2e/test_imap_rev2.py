"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, against the running server: ENABLE IMAP4rev2 and
what it changes (no \\Recent, ESEARCH for SEARCH, UTF-8 mailbox names, SELECT's LIST), and
the extensions rev2 requires: BINARY (RFC 3516), SEARCHRES (RFC 5182), STATUS=SIZE
(RFC 8438) and STATUS DELETED. A rev1 session is checked to answer as before."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient

from mailboxkit.store.folders import insert_folder

from harness import ImapLine, ServerThread

ADDRESS = "bot@example.test"
PAYLOAD = bytes(range(256)) * 3  # every octet value, NUL included
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n\Z")


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def attachment_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["Subject"] = "Report"
    msg.set_content("Grüße, the report is attached.\n", cte="quoted-printable")
    msg.add_attachment(PAYLOAD, maintype="application", subtype="octet-stream", filename="r.bin")
    return crlf(bytes(msg))


UUENCODED = (
    b"From: Carol <carol@example.test>\r\nSubject: old\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 a\r\n#86)C\r\n`\r\nend\r\n"
)
PLAIN = b"From: Dave <dave@example.test>\r\nSubject: plain\r\n\r\nhello\r\n"


def exchange(conn: ImapLine, tag: str, command: bytes) -> tuple[list[bytes], list[bytes]]:
    """Send ``tag command``; the response lines (to the tagged one) and the literals in them."""
    conn.send(tag.encode() + b" " + command + b"\r\n")
    lines: list[bytes] = []
    literals: list[bytes] = []
    while True:
        line = conn.read()
        assert line, "connection closed"
        lines.append(line)
        literal = _LITERAL.search(line)
        if literal:
            literals.append(conn.read_literal(int(literal.group(1))))
        elif line.startswith(tag.encode() + b" "):
            return lines, literals


def append(conn: ImapLine, data: bytes, flags: str = "") -> None:
    head = f"APPEND INBOX {flags} ".replace("  ", " ").encode()
    lines, _ = exchange(conn, "ap", head + b"{%d+}\r\n" % len(data) + data)
    assert lines[-1].startswith(b"ap OK [APPENDUID "), lines


@pytest.fixture
def key(server: ServerThread) -> str:
    inbox = server.create_inbox(ADDRESS)
    return server.create_key(inbox.account_id)


def login(server: ServerThread, key: str) -> ImapLine:
    line = ImapLine(server.imap_port)
    line.read()
    assert line.command("l", f"LOGIN {ADDRESS} {key}")[-1].startswith(b"l OK ")
    return line


@pytest.fixture
def conn(server: ServerThread, key: str) -> Iterator[ImapLine]:
    line = login(server, key)
    yield line
    line.close()


def test_capabilities_and_enable(server: ServerThread, key: str) -> None:
    """The rev2 capabilities are offered to everyone; imapclient enables IMAP4rev2 once."""
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        for capability in (b"IMAP4REV1", b"IMAP4REV2", b"BINARY", b"SEARCHRES", b"LITERAL-"):
            assert capability in client.capabilities()
        assert b"STATUS=SIZE" in client.capabilities()
        client.login(ADDRESS, key)
        assert client.enable("IMAP4rev2") == [b"IMAP4rev2"]
        assert client.enable("IMAP4rev2") == []  # already on: nothing newly enabled


def test_binary_through_imapclient(server: ServerThread, key: str) -> None:
    # imapclient reads BINARY data in an ordinary literal; literal8 (data with NUL) it cannot.
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        client.login(ADDRESS, key)
        client.append("INBOX", attachment_message())
        client.select_folder("INBOX")
        data = client.fetch([1], ["BINARY.PEEK[1]", "BINARY.SIZE[2]"])[1]
        assert data[b"BINARY[1]"] == "Grüße, the report is attached.\r\n".encode()
        assert data[b"BINARY.SIZE[2]"] == len(PAYLOAD)


def test_enable_answers_with_the_canonical_name(conn: ImapLine) -> None:
    """RFC 5161 §3.1, RFC 9051 §6.3.1: the name is case-insensitive, ENABLED spells it."""
    assert conn.command("e", "ENABLE imap4REV2 CONDSTORE") == [
        b"* ENABLED IMAP4rev2 CONDSTORE\r\n",
        b"e OK ENABLE completed\r\n",
    ]


def test_binary_decodes_base64_and_quoted_printable(conn: ImapLine) -> None:
    """RFC 3516 §4.1: BINARY, BINARY.PEEK, partials and BINARY.SIZE, transfer encoding undone."""
    raw = attachment_message()
    append(conn, raw)
    conn.command("s", "SELECT INBOX")
    lines, literals = exchange(conn, "f1", b"FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])")
    assert lines[0] == b"* 1 FETCH (BINARY.SIZE[2] %d BINARY[2] ~{%d}\r\n" % (
        len(PAYLOAD),
        len(PAYLOAD),
    )
    assert literals == [PAYLOAD]  # the attachment's octets, base64 undone
    body = exchange(conn, "f2", b"FETCH 1 (BODY.PEEK[2])")[1][0]
    assert base64.b64decode(body) == PAYLOAD  # BODY[] is still the encoded form
    lines, literals = exchange(conn, "f3", b"FETCH 1 (BINARY.PEEK[2]<250.20> BINARY.PEEK[1])")
    assert lines[0] == b"* 1 FETCH (BINARY[2]<250> ~{20}\r\n"
    assert literals == [PAYLOAD[250:270], "Grüße, the report is attached.\r\n".encode()]
    lines = conn.command("f4", "FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[] FLAGS)")
    size_1 = len("Grüße, the report is attached.\r\n".encode())
    assert lines[0] == b"* 1 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[] %d FLAGS ())\r\n" % (
        size_1,
        len(raw),
    )
    lines, literals = exchange(conn, "f5", b"FETCH 1 (BINARY[])")  # not PEEK: sets \Seen
    assert literals == [raw]  # the whole message as stored
    assert b"FLAGS (\\Seen)" in lines[-2]


def test_binary_of_a_large_attachment(conn: ImapLine) -> None:
    # Above the size handled inline: parsed and decoded in the worker processes.
    photo = bytes(range(256)) * 1024  # 256 KiB, NUL included
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg.set_content("A photo.\n")
    msg.add_attachment(photo, maintype="image", subtype="jpeg", filename="a.jpg")
    raw = crlf(bytes(msg))
    conn.send(b"a APPEND INBOX {%d}\r\n" % len(raw))
    assert conn.read() == b"+ Ready for literal data\r\n"
    conn.send(raw + b"\r\n")
    assert conn.until_tagged("a")[-1].startswith(b"a OK ")
    conn.command("s", "SELECT INBOX")
    lines, literals = exchange(conn, "f", b"FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])")
    assert lines[0] == b"* 1 FETCH (BINARY.SIZE[2] %d BINARY[2] ~{%d}\r\n" % (
        len(photo),
        len(photo),
    )
    assert literals == [photo]


def test_binary_partial_past_the_end_and_missing_part(conn: ImapLine) -> None:
    """A window past the end is empty; a part that does not exist has size 0."""
    append(conn, attachment_message())
    conn.command("s", "SELECT INBOX")
    lines = conn.command("f1", "FETCH 1 (BINARY.PEEK[2]<5000.10> BINARY.SIZE[7])")
    assert lines[0] == b'* 1 FETCH (BINARY[2]<5000> "" BINARY.SIZE[7] 0)\r\n'


def test_unknown_transfer_encoding_is_unknown_cte(conn: ImapLine) -> None:
    """RFC 3516 §4.3: an encoding the server cannot undo is NO [UNKNOWN-CTE]."""
    append(conn, PLAIN)
    append(conn, UUENCODED)
    conn.command("s", "SELECT INBOX")
    lines = conn.command("f1", "FETCH 1:2 (BINARY.PEEK[1])")
    assert lines == [  # message 1 is answered before message 2 fails
        b"* 1 FETCH (BINARY[1] {7}\r\n",
        b"hello\r\n",
        b")\r\n",
        b"f1 NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n",
    ]
    assert conn.command("f2", "FETCH 2 (BINARY.SIZE[1])") == [
        b"f2 NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    ]
    lines = conn.command("f3", "FETCH 2 (BINARY.SIZE[])")  # the whole message needs no decoding
    assert lines[0] == b"* 2 FETCH (BINARY.SIZE[] %d)\r\n" % len(UUENCODED)


def binary_message() -> bytes:
    """A message with a part in the ``binary`` transfer encoding: NUL and bare CR, LF."""
    return (
        b"From: Alice <alice@example.test>\r\nSubject: raw\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
        b"\r\n" + PAYLOAD + b"\r\n--b--\r\n"
    )


def test_append_literal8_with_nul_round_trips(conn: ImapLine) -> None:
    """RFC 3516 §4.4: APPEND with ~{n} and ~{n+}; the octets come back exact, NUL and all."""
    raw = binary_message()
    conn.send(b"a1 APPEND INBOX ~{%d}\r\n" % len(raw))
    assert conn.read() == b"+ Ready for literal data\r\n"
    conn.send(raw + b"\r\n")
    assert conn.until_tagged("a1")[-1].startswith(b"a1 OK [APPENDUID ")
    lines, _ = exchange(conn, "a2", b"APPEND INBOX (\\Seen) ~{%d+}\r\n" % len(raw) + raw)
    assert lines[-1].startswith(b"a2 OK [APPENDUID ")
    conn.send(b"a3 APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
    assert conn.until_tagged("a3")[-1].startswith(b"a3 BAD ")  # NUL needs literal8
    conn.command("s", "SELECT INBOX")
    for number in (1, 2):
        lines, literals = exchange(
            conn, "f", b"FETCH %d (BODY.PEEK[] BINARY.PEEK[] BINARY.PEEK[2])" % number
        )
        assert lines[0] == b"* %d FETCH (BODY[] {%d}\r\n" % (number, len(raw))
        assert literals == [raw, raw, PAYLOAD]
    lines = conn.command("z", "FETCH 1:2 (RFC822.SIZE)")
    assert lines[:2] == [b"* %d FETCH (RFC822.SIZE %d)\r\n" % (n, len(raw)) for n in (1, 2)]


def test_searchres_save_and_dollar(conn: ImapLine) -> None:
    """RFC 5182: SEARCH RETURN (SAVE), then $ in FETCH, UID STORE, SEARCH, UID COPY, MOVE."""
    for sender in ("alice", "bob", "alice", "carol", "alice"):
        append(conn, b"From: %s@example.test\r\nSubject: s\r\n\r\nx\r\n" % sender.encode())
    conn.command("c", "CREATE Archive")
    conn.command("s", "SELECT INBOX")
    # SAVE alone answers nothing but OK (RFC 5182 §2.1); $ then stands for the result.
    assert conn.command("q1", "SEARCH RETURN (SAVE) FROM alice") == [b"q1 OK SEARCH completed\r\n"]
    lines = conn.command("f1", "FETCH $ (UID)")
    assert lines[:-1] == [b"* %d FETCH (UID %d)\r\n" % (n, n) for n in (1, 3, 5)]
    lines = conn.command("u1", "UID STORE $ +FLAGS.SILENT (\\Flagged)")
    assert lines == [b"u1 OK STORE completed\r\n"]
    assert conn.command("q2", "SEARCH FLAGGED") == [
        b"* SEARCH 1 3 5\r\n",
        b"q2 OK SEARCH completed\r\n",
    ]
    assert conn.command("q3", "UID SEARCH $ SUBJECT s")[0] == b"* SEARCH 1 3 5\r\n"
    assert conn.command("c1", "UID COPY $ Archive")[-1].startswith(b"c1 OK [COPYUID ")
    # With MIN and MAX alone only those two are kept (RFC 5182 §2.4); ESEARCH answers too.
    lines = conn.command("q4", "UID SEARCH RETURN (SAVE MIN MAX) FROM alice")
    assert lines[0] == b'* ESEARCH (TAG "q4") UID MIN 1 MAX 5\r\n'
    lines = conn.command("m1", "MOVE $ Archive")
    assert lines[0].startswith(b"* OK [COPYUID ")
    assert lines[0].endswith(b" 1,5 4:5] Moved\r\n")
    assert [line for line in lines if line.endswith(b"EXPUNGE\r\n")] == [
        b"* 5 EXPUNGE\r\n",
        b"* 1 EXPUNGE\r\n",
    ]
    # Expunged messages left $: it is empty now, and FETCH $ names nothing.
    assert conn.command("f2", "FETCH $ (UID)") == [b"f2 OK FETCH completed\r\n"]
    # A SEARCH with SAVE that fails empties $ (RFC 5182 §2.1).
    conn.command("q5", "SEARCH RETURN (SAVE) ALL")
    assert len(conn.command("f3", "FETCH $ (UID)")) == 4
    lines = conn.command("q6", "SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    assert lines[-1].startswith(b"q6 NO [BADCHARSET")
    assert conn.command("f4", "FETCH $ (UID)") == [b"f4 OK FETCH completed\r\n"]


def test_dollar_is_reset_by_select_and_unselect(conn: ImapLine) -> None:
    """RFC 5182 §2.1: SELECT, EXAMINE and UNSELECT leave $ empty."""
    for _ in range(3):
        append(conn, PLAIN)
    conn.command("s1", "SELECT INBOX")
    conn.command("q1", "SEARCH RETURN (SAVE) ALL")
    assert len(conn.command("f1", "FETCH $ (UID)")) == 4
    conn.command("s2", "EXAMINE INBOX")
    assert conn.command("f2", "FETCH $ (UID)") == [b"f2 OK FETCH completed\r\n"]
    conn.command("q2", "SEARCH RETURN (SAVE) 2")
    assert conn.command("f3", "FETCH $ (UID)")[0] == b"* 2 FETCH (UID 2)\r\n"
    conn.command("u", "UNSELECT")
    conn.command("s3", "SELECT INBOX")
    assert conn.command("f4", "FETCH $ (UID)") == [b"f4 OK FETCH completed\r\n"]
    assert conn.command("x", "SELECT INBOX (QRESYNC (1 1 $))")[-1].startswith(b"x BAD ")


def test_status_size_and_deleted(conn: ImapLine) -> None:
    """RFC 8438 SIZE (the sum of RFC822.SIZE) and RFC 9051 DELETED, by STATUS and LIST."""
    messages = [attachment_message(), PLAIN, binary_message().replace(b"\x00", b"0")]
    for data in messages:
        append(conn, data)
    conn.command("s", "SELECT INBOX")
    conn.command("d", "STORE 2 +FLAGS (\\Deleted)")
    sizes = [
        int(match)
        for line in conn.command("f", "FETCH 1:* (RFC822.SIZE)")
        for match in re.findall(rb"RFC822\.SIZE (\d+)", line)
    ]
    assert sum(sizes) == sum(len(m) for m in messages)
    assert conn.command("st", "STATUS INBOX (MESSAGES SIZE DELETED)")[0] == (
        b'* STATUS "INBOX" (MESSAGES 3 SIZE %d DELETED 1)\r\n' % sum(sizes)
    )
    lines = conn.command("l", 'LIST "" "INBOX" RETURN (STATUS (SIZE DELETED))')
    assert lines[:2] == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n',
        b'* STATUS "INBOX" (SIZE %d DELETED 1)\r\n' % sum(sizes),
    ]


def test_rev2_select_search_and_flags(conn: ImapLine) -> None:
    """After ENABLE IMAP4rev2: no \\Recent or [UNSEEN], a LIST in SELECT, ESEARCH, [CLOSED]."""
    append(conn, PLAIN, "(\\Seen)")
    append(conn, PLAIN)
    conn.command("c", "CREATE Work/Done")
    conn.command("e", "ENABLE IMAP4rev2")
    lines = conn.command("s1", "SELECT INBOX")
    text = b"".join(lines)
    assert b"RECENT" not in text and b"\\Recent" not in text and b"[UNSEEN" not in text
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    assert b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n" in lines
    assert b"* 2 EXISTS\r\n" in lines
    assert lines[-1] == b"s1 OK [READ-WRITE] SELECT completed\r\n"
    assert conn.command("q1", "SEARCH ALL") == [
        b'* ESEARCH (TAG "q1") ALL 1:2\r\n',
        b"q1 OK SEARCH completed\r\n",
    ]
    assert conn.command("q2", "UID SEARCH UNSEEN")[0] == b'* ESEARCH (TAG "q2") UID ALL 2\r\n'
    assert conn.command("q3", "SEARCH DRAFT")[0] == b'* ESEARCH (TAG "q3")\r\n'
    assert conn.command("q4", "SEARCH RETURN (COUNT) ALL")[0] == b'* ESEARCH (TAG "q4") COUNT 2\r\n'
    for key in ("RECENT", "NEW", "NOT OLD"):  # not IMAP4rev2 search keys (RFC 9051 §9)
        assert conn.command("q5", f"SEARCH {key}")[-1].startswith(b"q5 BAD ")
    lines = conn.command("l", 'LIST "" "W*"')  # CREATE made the parent too (RFC 9051 §6.3.4)
    assert lines[:2] == [
        b'* LIST (\\HasChildren) "/" "Work"\r\n',
        b'* LIST (\\HasNoChildren) "/" "Work/Done"\r\n',
    ]
    lines = conn.command("s2", "EXAMINE Work/Done")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed\r\n"
    assert lines[1] == b'* LIST (\\HasNoChildren) "/" "Work/Done"\r\n'


def test_rev1_session_is_unchanged(conn: ImapLine) -> None:
    """Without ENABLE IMAP4rev2 SELECT, SEARCH and LIST answer exactly as before."""
    append(conn, PLAIN, "(\\Seen)")
    append(conn, PLAIN)
    lines = conn.command("s", "SELECT INBOX")
    assert lines[:5] == [
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n",
        b"* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)] "
        b"Flags permitted\r\n",
        b"* 2 EXISTS\r\n",
        b"* 0 RECENT\r\n",
        b"* OK [UNSEEN 2] UNSEEN\r\n",
    ]
    assert conn.command("q1", "SEARCH ALL")[0] == b"* SEARCH 1 2\r\n"
    assert conn.command("q2", "SEARCH NEW") == [b"* SEARCH\r\n", b"q2 OK SEARCH completed\r\n"]
    assert conn.command("q3", "UID SEARCH UNSEEN")[0] == b"* SEARCH 2\r\n"
    lines = conn.command("l", 'LIST "" "INBOX"')
    assert lines == [b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n', b"l OK LIST completed\r\n"]


def test_a_parent_that_is_no_mailbox_is_nonexistent(server: ServerThread, key: str) -> None:
    """RFC 9051 §7.3.1: a name listed only for its child is ``\\NonExistent``."""
    inbox = server.create_inbox("other@example.test")

    async def child_without_parent() -> None:
        async with server.app.db.write() as conn:
            await insert_folder(conn, inbox.id, "Projects/2026", None, server.app.clock.now())

    server.call(child_without_parent())
    other = server.create_key(inbox.account_id)
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.command("l", f"LOGIN other@example.test {other}")
    conn.command("e", "ENABLE IMAP4rev2")
    assert conn.command("l1", 'LIST "" "Pro*"')[:2] == [
        b'* LIST (\\NonExistent \\Noselect \\HasChildren) "/" "Projects"\r\n',
        b'* LIST (\\HasNoChildren) "/" "Projects/2026"\r\n',
    ]
    assert conn.command("s", "SELECT Projects")[-1] == (
        b"s NO [NONEXISTENT] Mailbox does not exist\r\n"
    )
    conn.close()


NAME = "Entwürfe & Ideen"


def test_mailbox_names_utf8_under_rev2_and_modified_utf7_under_rev1(
    server: ServerThread, key: str
) -> None:
    """RFC 9051 §5.1: one mailbox, UTF-8 to a rev2 session, modified UTF-7 to a rev1 one."""
    rev2 = login(server, key)
    rev2.command("e", "ENABLE IMAP4rev2")
    assert rev2.command("c1", f'CREATE "{NAME}"'.encode()) == [b"c1 OK CREATE completed\r\n"]
    assert rev2.command("c2", 'CREATE "A&-B"') == [b"c2 OK CREATE completed\r\n"]  # & is itself
    lines = rev2.command("l", 'LIST "" "*"')
    assert f'* LIST (\\HasNoChildren) "/" "{NAME}"\r\n'.encode() in lines
    assert b'* LIST (\\HasNoChildren) "/" "A&-B"\r\n' in lines
    status = rev2.command("st", f'STATUS "{NAME}" (MESSAGES)'.encode())
    assert status[0] == f'* STATUS "{NAME}" (MESSAGES 0)\r\n'.encode()
    lines = rev2.command("s", f'SELECT "{NAME}"'.encode())
    assert lines[0] == f'* LIST (\\HasNoChildren) "/" "{NAME}"\r\n'.encode()
    rev2.close()

    rev1 = login(server, key)
    lines = rev1.command("l", 'LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe &- Ideen"\r\n' in lines
    assert b'* LIST (\\HasNoChildren) "/" "A&--B"\r\n' in lines
    lines = rev1.command("st", 'STATUS "Entw&APw-rfe &- Ideen" (MESSAGES)')
    assert lines[0] == b'* STATUS "Entw&APw-rfe &- Ideen" (MESSAGES 0)\r\n'
    rev1.close()
