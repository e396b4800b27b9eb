"""The MX receiver end to end: real smtplib/aiosmtplib sessions against the running server."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from sqlalchemy import delete, select

from mailboxkit.store import models as m
from mailboxkit.store.db import Database

from harness import ServerThread, server_settings


def _message(to: str, subject: str = "Hello", body: str = "Hi there.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@sender.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@sender.test>"
    msg.set_content(body)
    return bytes(msg).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


def _stored(server: ServerThread, inbox_id: str) -> list[bytes]:
    rows = server.query(
        select(m.messages.c.raw_key)
        .where(m.messages.c.inbox_id == inbox_id)
        .order_by(m.messages.c.received_at)
    )
    return [server.blob(r.raw_key) for r in rows]


def _original(stored: bytes) -> bytes:
    """The message as the client sent it: what follows our one Received header."""
    assert stored.startswith(b"Received: from ")
    end = stored.index(b"\r\n", stored.index(b"\r\n\t") + 3)
    while stored[end + 2 : end + 3] == b"\t":
        end = stored.index(b"\r\n", end + 2)
    return stored[end + 2 :]


def test_delivers_to_existing_inbox_byte_exact(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    data = _message("bot@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        code, ehlo = client.ehlo("client.sender.test")
        assert code == 250
        for keyword in (b"PIPELINING", b"ENHANCEDSTATUSCODES", b"8BITMIME", b"SMTPUTF8", b"SIZE"):
            assert keyword in ehlo
        refused = client.sendmail("alice@sender.test", ["bot@example.test"], data)
        assert refused == {}
    [stored] = _stored(server, inbox.id)
    assert _original(stored) == data
    assert b"by mx.example.test (MailboxKit) with ESMTP id " in stored
    assert b"for <bot@example.test>" in stored


def test_unknown_recipient_rejected_at_rcpt(server: ServerThread) -> None:
    server.create_inbox("bot@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo()
        client.mail("alice@sender.test")
        code, text = client.rcpt("nobody@example.test")
    assert code == 550
    assert text.startswith(b"5.1.1 ")


def test_bounce_with_the_null_reverse_path_is_accepted(server: ServerThread) -> None:
    """RFC 5321 §4.5.5: delivery status notifications come from ``MAIL FROM:<>``."""
    inbox = server.create_inbox("bot@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo("mx.sender.test")
        assert client.mail("") == (250, b"2.1.0 Sender OK")
        assert client.rcpt("bot@example.test")[0] == 250
        assert client.data(_message("bot@example.test", "Undeliverable"))[0] == 250
    [row] = server.query(
        select(m.messages.c.envelope_from).where(m.messages.c.inbox_id == inbox.id)
    )
    assert row.envelope_from == ""


def test_unparseable_paths_get_a_syntax_error_and_the_session_goes_on(
    server: ServerThread,
) -> None:
    server.create_inbox("bot@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo()
        for path in ("<", "<("):  # both crash the email package's parser
            code, text = client.docmd("MAIL", f"FROM:{path}")
            assert (code, text[:6]) == (553, b"5.1.3 "), path
        assert client.mail("alice@sender.test")[0] == 250
        for path in ("<", "<("):
            code, text = client.docmd("RCPT", f"TO:{path}")
            assert (code, text[:6]) == (553, b"5.1.3 "), path
        assert client.rcpt("bot@example.test")[0] == 250


@pytest.mark.parametrize("rcpt", ["victim@elsewhere.test", "bot@example.test.evil.test"])
def test_relay_refused(server: ServerThread, rcpt: str) -> None:
    server.create_inbox("bot@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo()
        client.mail("alice@sender.test")
        code, text = client.rcpt(rcpt)
    assert code == 550
    assert text.startswith(b"5.7.1 ")


def test_plus_addressing_delivers_to_base_inbox(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    data = _message("bot+signup@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        assert client.sendmail("alice@sender.test", ["Bot+signup@Example.TEST"], data) == {}
    [stored] = _stored(server, inbox.id)
    assert _original(stored) == data
    [row] = server.query(select(m.messages.c.envelope_to).where(m.messages.c.inbox_id == inbox.id))
    assert row.envelope_to == ["Bot+signup@Example.TEST"]


def test_fan_out_with_status_per_recipient(server: ServerThread) -> None:
    one = server.create_inbox("one@example.test")
    two = server.create_inbox("two@example.test")
    data = _message("one@example.test, two@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        refused = client.sendmail(
            "alice@sender.test",
            ["one@example.test", "nobody@example.test", "two@example.test", "one+x@example.test"],
            data,
        )
    assert set(refused) == {"nobody@example.test"}
    assert refused["nobody@example.test"][0] == 550
    assert [_original(s) for s in _stored(server, one.id)] == [data]
    assert [_original(s) for s in _stored(server, two.id)] == [data]


def test_message_too_large(tmp_path: Path, database_url: str) -> None:
    running = ServerThread(
        server_settings(tmp_path / "data", database_url, smtp_max_message_size=10_000)
    )
    running.start()
    try:
        running.create_inbox("bot@example.test")
        big = _message("bot@example.test", body="x" * 70 + "\n") * 200
        with smtplib.SMTP("127.0.0.1", running.smtp_port) as client:
            client.ehlo()
            # Announced with SIZE: refused at MAIL.
            code, text = client.mail("alice@sender.test", ["SIZE=20000"])
            assert (code, text[:6]) == (552, b"5.3.4 ")
            client.rset()
            # Not announced: refused after the data, and the session goes on.
            client.esmtp_features.pop("size")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("alice@sender.test", ["bot@example.test"], big)
            assert refused.value.smtp_code == 552
            assert refused.value.smtp_error.startswith(b"5.3.4 ")
            assert client.noop()[0] == 250
        assert running.query(select(m.messages.c.id)) == []
    finally:
        running.stop()


def test_a_line_over_the_limit_refuses_the_message_and_the_session_goes_on(
    server: ServerThread,
) -> None:
    server.create_inbox("bot@example.test")
    long_line = b"Subject: one long line\r\n\r\n" + b"y" * 20_000 + b"\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("alice@sender.test", ["bot@example.test"], long_line)
        assert (refused.value.smtp_code, refused.value.smtp_error[:6]) == (500, b"5.5.2 ")
        client.sendmail("alice@sender.test", ["bot@example.test"], _message("bot@example.test"))
    assert len(server.query(select(m.messages.c.id))) == 1


def test_eight_bit_and_smtputf8_stored_byte_exact(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    eight_bit = (
        (
            "From: Jürgen <jürgen@sender.test>\r\nTo: bot@example.test\r\n"
            "Subject: Grüße aus Köln\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\nMessage-ID: <8bit@sender.test>\r\n\r\n"
            "Schöne Grüße – ☃\r\nLatin-1 byte: \xe9 stays.\r\n"  # noqa: RUF001
        )
        .encode()
        .replace("\xe9".encode(), b"\xe9")
    )
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo()
        refused = client.sendmail(
            "jürgen@sender.test",
            ["bot@example.test"],
            eight_bit,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        assert refused == {}
    [stored] = _stored(server, inbox.id)
    assert _original(stored) == eight_bit
    assert b" with UTF8SMTP id " in stored
    [row] = server.query(select(m.messages.c.subject, m.messages.c.envelope_from))
    assert row.subject == "Grüße aus Köln"
    assert row.envelope_from == "jürgen@sender.test"


def test_malformed_mime_is_stored_and_readable(server: ServerThread) -> None:
    inbox = server.create_inbox("bot@example.test")
    broken = (
        b"From: =?utf-8?B?broken?= <<alice@@sender.test>\r\nTo: bot@example.test\r\n"
        b"Subject: =?unknown-charset?Q?caf=E9?=\r\nDate: not a date\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=nonexistent\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
        b'--never-closed\r\nContent-Type: application/pdf; name="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        assert client.sendmail("alice@sender.test", ["bot@example.test"], broken) == {}
    [stored] = _stored(server, inbox.id)
    assert _original(stored) == broken
    [row] = server.query(
        select(m.messages.c.subject, m.messages.c.sent_at, m.messages.c.has_attachments)
    )
    assert "caf" in row.subject
    assert row.sent_at is None


def test_a_large_message_is_stored_byte_exact_with_its_attachment(server: ServerThread) -> None:
    # Above the size parsed inline: its parsing runs in a worker process.
    inbox = server.create_inbox("bot@example.test")
    report = bytes(range(256)) * 2048  # 512 KiB
    msg = EmailMessage()
    msg["From"] = "Alice <alice@sender.test>"
    msg["To"] = "bot@example.test"
    msg["Subject"] = "The quarterly report"
    msg.set_content("The report is attached.\n")
    msg.add_attachment(report, maintype="application", subtype="pdf", filename="report.pdf")
    data = bytes(msg).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        assert client.sendmail("alice@sender.test", ["bot@example.test"], data) == {}
    [stored] = _stored(server, inbox.id)
    assert _original(stored) == data
    [row] = server.query(select(m.messages.c.subject, m.messages.c.text))
    assert (row.subject, row.text) == ("The quarterly report", "The report is attached.\n")
    [attachment] = server.query(
        select(m.attachments.c.filename, m.attachments.c.size, m.attachments.c.blob_key)
    )
    assert (attachment.filename, attachment.size) == ("report.pdf", len(report))
    assert server.blob(attachment.blob_key) == report


async def test_starttls_with_verified_certificate(tmp_path: Path, database_url: str) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.example.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    running = ServerThread(
        server_settings(
            tmp_path / "data", database_url, tls_cert_file=cert_file, tls_key_file=key_file
        )
    )
    running.start()
    try:
        inbox = running.create_inbox("bot@example.test")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        data = _message("bot@example.test")
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=running.smtp_port,
            tls_context=context,
            start_tls=True,
        ) as client:
            errors, response = await client.sendmail(
                "alice@sender.test", ["bot@example.test"], data
            )
            assert errors == {}
            assert response.startswith("2.0.0 OK: queued as ")
        [stored] = _stored(running, inbox.id)
        assert _original(stored) == data
        assert b" with ESMTPS id " in stored
    finally:
        running.stop()


def test_pipelined_transactions_in_one_write(server: ServerThread) -> None:
    import socket

    inbox = server.create_inbox("bot@example.test")
    body = b"Subject: pipelined\r\n\r\nfirst\r\n"
    with socket.create_connection(("127.0.0.1", server.smtp_port)) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO c.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(
            b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bot@example.test>\r\n"
            b"RCPT TO:<ghost@example.test>\r\nDATA\r\n"
        )
        replies = [reader.readline() for _ in range(4)]
        assert [r[:9] for r in replies] == [b"250 2.1.0", b"250 2.1.5", b"550 5.1.1", b"354 End d"]
        sock.sendall(body + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        replies = [reader.readline() for _ in range(4)]
        assert [r[:9] for r in replies] == [b"250 2.0.0", b"250 2.0.0", b"250 2.0.0", b"221 2.0.0"]
    assert [_original(s) for s in _stored(server, inbox.id)] == [body]


def test_too_many_connections_from_one_address(tmp_path: Path, database_url: str) -> None:
    running = ServerThread(
        server_settings(tmp_path / "data", database_url, smtp_max_connections_per_ip=2)
    )
    running.start()
    try:
        first = smtplib.SMTP("127.0.0.1", running.smtp_port)
        second = smtplib.SMTP("127.0.0.1", running.smtp_port)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", running.smtp_port)
        assert refused.value.smtp_code == 421
        first.quit()
        # A slot is free again once a session ends.
        third = smtplib.SMTP("127.0.0.1", running.smtp_port)
        assert third.noop()[0] == 250
        third.quit()
        second.quit()
    finally:
        running.stop()


def test_inbox_deleted_during_the_transaction_gets_a_temporary_error(
    server: ServerThread,
) -> None:
    """RCPT answers from a short cache; a vanished inbox fails at delivery with 451, not 250."""
    gone = server.create_inbox("gone@example.test")
    kept = server.create_inbox("kept@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo()
        client.mail("alice@sender.test")
        assert client.rcpt("gone@example.test")[0] == 250
        server.execute(delete(m.inboxes).where(m.inboxes.c.id == gone.id))
        code, text = client.data(_message("gone@example.test"))
        assert (code, text[:6]) == (451, b"4.3.0 ")
        # The session and the server carry on.
        assert client.sendmail("alice@sender.test", ["kept@example.test"], _message("kept")) == {}
    assert len(_stored(server, kept.id)) == 1
    assert server.query(select(m.messages.c.id).where(m.messages.c.inbox_id == gone.id)) == []


def test_shutdown_ends_idle_sessions_and_lets_a_transaction_finish(
    tmp_path: Path, database_url: str
) -> None:
    """A stop (SIGTERM, a deploy) closes idle sessions at once with 421; a transaction in
    flight is stored and acknowledged, and its session gets 421 at the next MAIL."""
    server = ServerThread(server_settings(tmp_path / "data", database_url, shutdown_grace=60))
    server.start()
    try:
        inbox = server.create_inbox("bot@example.test")
        idle = smtplib.SMTP("127.0.0.1", server.smtp_port)
        idle.ehlo()
        busy = smtplib.SMTP("127.0.0.1", server.smtp_port)
        busy.ehlo()
        busy.mail("alice@sender.test")
        busy.rcpt("bot@example.test")
        assert busy.docmd("DATA")[0] == 354
        stopping = asyncio.run_coroutine_threadsafe(server.app.stop(), server.loop)
        # The idle session hears 421 without asking (RFC 5321 §3.8) and is closed.
        assert idle.getreply() == (421, b"4.3.2 Service shutting down, try again later")
        busy.send(b"Subject: in flight\r\n\r\nbody\r\n.\r\n")
        code, text = busy.getreply()
        assert (code, text[:6]) == (250, b"2.0.0 ")
        assert busy.docmd("MAIL", "FROM:<alice@sender.test>")[0] == 421
        stopping.result(timeout=30)  # well before the 60 s grace: nothing left to wait for
        idle.close()
        busy.close()
    finally:
        server.end_loop()
    assert asyncio.run(_subjects(database_url, inbox.id)) == ["in flight"]


async def _subjects(database_url: str, inbox_id: str) -> list[str]:
    db = Database.open(database_url)
    try:
        async with db.read() as conn:
            query = select(m.messages.c.subject).where(m.messages.c.inbox_id == inbox_id)
            return list((await conn.scalars(query)).all())
    finally:
        await db.close()
