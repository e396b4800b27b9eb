"""SMTP smuggling: no end-of-data but CRLF.CRLF ends a message, so nothing can be slipped in.

Each case hides a complete second transaction behind a fake end of data. The server must either
refuse the message or keep the whole thing, fake end and all, inside one message: never two.
"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from mailboxkit.store import models as m

from harness import ServerThread

SMUGGLED = (
    b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<bot@example.test>\r\nDATA\r\n"
    b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
)


def _session(port: int, data: bytes) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO attacker.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bot@example.test>\r\nDATA\r\n")
        assert [reader.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(data + b"QUIT\r\n")
        replies = []
        for line in reader:
            replies.append(line)
            if line.startswith(b"221"):
                break
        return replies


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r\n\r\n"],
    ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CRLF", "CRLF.CR", "LF.CRLF-pipelined"],
)
def test_fake_end_of_data_never_splits_a_message(server: ServerThread, fake_end: bytes) -> None:
    inbox = server.create_inbox("bot@example.test")
    data = (
        b"From: alice@sender.test\r\nSubject: innocent\r\n\r\nhello"
        + fake_end
        + SMUGGLED
        + b".\r\n"
    )
    replies = _session(server.smtp_port, data)
    rows = server.query(select(m.messages.c.subject).where(m.messages.c.inbox_id == inbox.id))
    assert [r.subject for r in rows] in ([], ["innocent"])
    finals = [r[:3] for r in replies]
    # One reply to the data, then 221 to QUIT; the smuggled commands were never commands.
    assert finals[-1] == b"221"
    assert len(finals) == 2
    if rows:
        [key] = server.query(select(m.messages.c.raw_key))
        assert b"wire the money" in server.blob(key.raw_key)


def test_real_end_of_data_does_end_the_message(server: ServerThread) -> None:
    """The control case: with a proper CRLF.CRLF the pipelined second message is legitimate."""
    inbox = server.create_inbox("bot@example.test")
    data = b"Subject: first\r\n\r\nhello\r\n.\r\n" + SMUGGLED + b".\r\n"
    replies = _session(server.smtp_port, data)
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354", b"250", b"221"]
    rows = server.query(
        select(m.messages.c.subject)
        .where(m.messages.c.inbox_id == inbox.id)
        .order_by(m.messages.c.received_at)
    )
    assert sorted(r.subject for r in rows) == ["first", "smuggled"]
