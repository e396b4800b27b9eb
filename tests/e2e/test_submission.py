"""SMTP submission end to end (RFC 6409, RFC 8314) with real TLS (trustme certificates):
AUTH only after TLS, API keys as passwords, the sender must be the authenticated inbox, the
recipient limit, and accepted mail signed, kept in Sent and delivered to the recipient's MX."""

from __future__ import annotations

import base64
import email
import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from e2e.sending import Sending, start_sending
from mailboxkit.store import models as m

from harness import free_port


@pytest.fixture
def sending(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    running = start_sending(
        tmp_path,
        database_url,
        submission_port=free_port(),
        submissions_port=free_port(),
        send_max_recipients=3,
    )
    yield running
    running.stop()


def connect(sending: Sending) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", sending.server.submission_port, timeout=30)
    smtp.ehlo("client.test")
    smtp.starttls(context=sending.client_context())
    smtp.ehlo("client.test")
    return smtp


MESSAGE = (
    b"From: Bot <bot@example.test>\r\nTo: alice@remote.test\r\nBcc: hidden@remote.test\r\n"
    b"Subject: Over submission\r\n\r\nHello from a mail client.\r\n"
)


def test_auth_is_refused_before_tls_and_mail_before_auth(sending: Sending) -> None:
    _, key = sending.inbox("bot@example.test")
    with smtplib.SMTP("127.0.0.1", sending.server.submission_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")  # not even offered in the clear
        plain = base64.b64encode(f"\0bot@example.test\0{key}".encode()).decode()
        code, text = smtp.docmd("AUTH", f"PLAIN {plain}")
        assert (code, text[:6]) == (538, b"5.7.11")
        assert smtp.docmd("MAIL", "FROM:<bot@example.test>")[0] == 530
    assert sending.server.query(select(m.outbound_messages.c.id)) == []


def test_wrong_passwords_and_keys_of_others_are_refused(sending: Sending) -> None:
    bot, key = sending.inbox("bot@example.test")
    _, stranger_key = sending.inbox("stranger@example.test")
    sibling = sending.server.create_inbox("sibling@example.test", bot.account_id)
    sibling_key = sending.server.create_key(bot.account_id, sibling.id)
    for user, password in [
        ("bot@example.test", "mbk_" + "x" * 40),
        ("bot@example.test", stranger_key),  # another account's key
        ("bot@example.test", sibling_key),  # a key of another inbox of the account
        ("nobody@example.test", key),
    ]:
        with connect(sending) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(user, password)
        assert refused.value.smtp_code == 535
    with connect(sending) as smtp:
        assert smtp.login("bot@example.test", key)[0] == 235


def test_the_sender_must_be_the_authenticated_inbox(sending: Sending) -> None:
    bot, key = sending.inbox("bot@example.test")
    sending.server.create_inbox("other@example.test", bot.account_id)
    with connect(sending) as smtp:
        smtp.login("bot@example.test", key)
        code, text = smtp.mail("other@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        smtp.rset()
        assert smtp.mail("bot+tag@example.test")[0] == 250
        assert smtp.rcpt("alice@remote.test")[0] == 250
        forged = MESSAGE.replace(b"From: Bot <bot@example.test>", b"From: other@example.test")
        code, text = smtp.data(forged)
        assert (code, text[:5]) == (553, b"5.7.1")
        smtp.rset()
        assert smtp.mail("bot@example.test")[0] == 250
        for n in range(3):
            assert smtp.rcpt(f"r{n}@remote.test")[0] == 250
        assert smtp.rcpt("r4@remote.test")[0] == 452  # the per-inbox recipient limit
    assert sending.server.query(select(m.outbound_messages.c.id)) == []


def test_submitted_mail_is_signed_kept_in_sent_and_delivered(sending: Sending) -> None:
    bot, _ = sending.inbox("bot@example.test")
    inbox_key = sending.server.create_key(bot.account_id, bot.id)  # an inbox-scoped key works
    with connect(sending) as smtp:
        smtp.login("bot@example.test", inbox_key)
        refused = smtp.sendmail(
            "bot@example.test", ["alice@remote.test", "hidden@remote.test"], MESSAGE
        )
    assert refused == {}
    got = sending.sink.next()
    assert sorted(got.rcpt_tos) == ["alice@remote.test", "hidden@remote.test"]
    assert [ok for _, ok in sending.dkim_verdicts(got.data)] == [True, True]
    msg = email.message_from_bytes(got.data)
    assert msg["Bcc"] is None  # removed: the envelope carries it
    assert msg["Message-ID"].endswith("@example.test>")  # added (RFC 6409 §8.3)
    assert msg["Date"]  # added (RFC 6409 §8.2)
    assert got.data.endswith(b"Hello from a mail client.\r\n")
    [copy] = sending.server.query(
        select(
            m.messages.c.direction,
            m.messages.c.envelope_to,
            m.messages.c.raw_key,
            m.folders.c.name,
        )
        .join(m.entries, m.entries.c.message_id == m.messages.c.id)
        .join(m.folders, m.folders.c.id == m.entries.c.folder_id)
        .where(m.messages.c.inbox_id == bot.id)
    )
    assert (copy.direction, copy.name) == ("outbound", "Sent")
    assert sorted(copy.envelope_to) == ["alice@remote.test", "hidden@remote.test"]
    sent = email.message_from_bytes(sending.server.blob(copy.raw_key))
    assert sent["Bcc"] == "hidden@remote.test"  # the sender's own copy says whom it went to
    assert sent["Message-ID"] == msg["Message-ID"]


def test_a_bcc_recipient_here_gets_a_copy_without_the_bcc_field(sending: Sending) -> None:
    _, key = sending.inbox("bot@example.test")
    pal, _ = sending.inbox("pal@example.test")
    message = MESSAGE.replace(b"Bcc: hidden@remote.test", b"Bcc: pal@example.test")
    with connect(sending) as smtp:
        smtp.login("bot@example.test", key)
        assert (
            smtp.sendmail("bot@example.test", ["alice@remote.test", "pal@example.test"], message)
            == {}
        )
    assert sending.sink.next().rcpt_tos == ("alice@remote.test",)
    sending.settled(2)
    [row] = sending.server.query(
        select(m.messages.c.raw_key, m.messages.c.headers).where(m.messages.c.inbox_id == pal.id)
    )
    delivered = sending.server.blob(row.raw_key)
    assert b"Bcc:" not in delivered.split(b"\r\n\r\n", 1)[0]
    assert delivered.endswith(b"Hello from a mail client.\r\n")
    assert [ok for _, ok in sending.dkim_verdicts(delivered)] == [True, True]
    assert "bcc" not in {name.lower() for name, _ in row.headers}


def test_implicit_tls_port_and_auth_login(sending: Sending) -> None:
    _, key = sending.inbox("bot@example.test")
    with smtplib.SMTP_SSL(
        "127.0.0.1",
        sending.server.submissions_port,
        context=sending.client_context(),
        timeout=30,
    ) as smtp:
        smtp.ehlo("client.test")
        assert "PLAIN" in smtp.esmtp_features["auth"]
        smtp.user, smtp.password = "bot@example.test", key
        assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
        assert smtp.sendmail("bot@example.test", ["alice@remote.test"], MESSAGE) == {}
    assert sending.sink.next().rcpt_tos == ("alice@remote.test",)


def test_a_clients_own_copy_in_sent_is_not_filed_twice(tmp_path: Path, database_url: str) -> None:
    """Clients that submit through us also save what they sent in Sent (IMAP APPEND): the copy
    we filed when sending is the one kept, and saving it is not a second send."""
    running = start_sending(
        tmp_path, database_url, submission_port=free_port(), imap_port=free_port()
    )
    try:
        bot, key = running.inbox("bot@example.test")
        sent = MESSAGE.replace(b"Bcc: hidden@remote.test\r\n", b"").replace(
            b"Subject:", b"Message-ID: <draft-1@client.test>\r\nSubject:"
        )
        with connect(running) as smtp:
            smtp.login("bot@example.test", key)
            smtp.sendmail("bot@example.test", ["alice@remote.test"], sent)
        running.settled(1)

        imap = imaplib.IMAP4("127.0.0.1", running.server.imap_port)
        imap.starttls(running.client_context())
        imap.login("bot@example.test", key)
        typ, data = imap.append("Sent", "(\\Seen)", None, sent)
        assert (typ, data[0].split()[2]) == ("OK", b"1]")  # APPENDUID names our copy, UID 1
        other = sent.replace(b"<draft-1@client.test>", b"<elsewhere@client.test>")
        typ, data = imap.append("Sent", "(\\Seen)", None, other)  # sent through another server
        assert (typ, data[0].split()[2]) == ("OK", b"2]")
        # A client that left Bcc out of what it submitted but kept it in its own copy: ours
        # has no Bcc, the client's copy is kept.
        with_bcc = sent.replace(b"Subject:", b"Bcc: hidden@remote.test\r\nSubject:")
        typ, data = imap.append("Sent", "(\\Seen)", None, with_bcc)
        assert (typ, data[0].split()[2]) == ("OK", b"3]")
        # Submitted with its Bcc field: our copy keeps it, the client's copy is not filed.
        second = with_bcc.replace(b"<draft-1@client.test>", b"<draft-2@client.test>")
        with connect(running) as smtp:
            smtp.login("bot@example.test", key)
            smtp.sendmail("bot@example.test", ["alice@remote.test", "hidden@remote.test"], second)
        running.settled(3)
        typ, data = imap.append("Sent", "(\\Seen)", None, second)
        assert (typ, data[0].split()[2]) == ("OK", b"4]")  # our copy, UID 4
        imap.select("Sent", readonly=True)
        typ, found = imap.uid("SEARCH", "ALL")
        assert found[0].split() == [b"1", b"2", b"3", b"4"]
        imap.logout()

        copies = running.server.query(
            select(m.messages.c.message_id_header)
            .join(m.entries, m.entries.c.message_id == m.messages.c.id)
            .where(m.messages.c.inbox_id == bot.id)
            .order_by(m.entries.c.uid)
        )
        assert [c.message_id_header for c in copies] == [
            "draft-1@client.test",
            "elsewhere@client.test",
            "draft-1@client.test",
            "draft-2@client.test",
        ]
        assert len(running.events("message.sent")) == 2  # the sends, not the saved copies
    finally:
        running.stop()
