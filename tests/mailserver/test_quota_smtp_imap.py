"""Quotas over the wire, against the running server: the MX defers a full recipient at RCPT
(452 4.2.2) and a message that would cross the limit at end of data, IMAP APPEND and COPY get
NO [OVERQUOTA], the QUOTA extension (RFC 9208) reports the account's STORAGE, and submission
stops at the daily send limit (451 4.7.1)."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from e2e.sending import Sending, start_sending
from mailboxkit.store import models as m
from mailboxkit.store import quota
from mailboxkit.store.accounts import Inbox

from harness import ImapLine, ServerThread, free_port


def message(to: str, size: int = 0, subject: str = "Hello") -> bytes:
    head = f"From: alice@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n".encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


def set_limits(server: ServerThread, account_id: str, **changes: Any) -> None:
    async def run() -> None:
        async with server.app.db.write() as conn:
            assert await quota.set_limits(conn, account_id, changes)

    server.call(run())


def storage(server: ServerThread, account_id: str) -> tuple[int, int]:
    """(the account's counter, the sum of its stored sizes)."""

    async def run() -> tuple[int, int]:
        async with server.app.db.read() as conn:
            found = await quota.storage(conn, account_id)
            assert found is not None
            return found.used, await quota.stored_bytes(conn, account_id)

    result: tuple[int, int] = server.call(run())
    return result


def stored_count(server: ServerThread, inbox: Inbox) -> int:
    [(count,)] = server.query(
        select(func.count()).select_from(m.messages).where(m.messages.c.inbox_id == inbox.id)
    )
    return int(count)


def deliver(server: ServerThread, to: str, size: int) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        assert client.sendmail("alice@sender.test", [to], message(to, size)) == {}


# --- the MX ---------------------------------------------------------------------------------


def test_a_full_recipient_is_deferred_at_rcpt_and_the_others_get_the_message(
    server: ServerThread,
) -> None:
    full = server.create_inbox("full@example.test")
    roomy = server.create_inbox("roomy@example.test")
    # Limited from the start: RCPT takes an account seen without a limit to have none for a
    # few seconds (UNLIMITED_TTL), and then only the end of data would refuse.
    set_limits(server, full.account_id, storage_limit=10**6)
    deliver(server, "full@example.test", 2000)
    used, _ = storage(server, full.account_id)  # with our Received header
    set_limits(server, full.account_id, storage_limit=used)
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo("client.sender.test")
        assert client.mail("alice@sender.test")[0] == 250
        code, text = client.rcpt("full@example.test")
        assert (code, text[:5]) == (452, b"4.2.2")
        assert client.rcpt("roomy@example.test")[0] == 250
        assert client.data(message("roomy@example.test", 500))[0] == 250
    assert stored_count(server, full) == 1
    assert stored_count(server, roomy) == 1
    assert storage(server, full.account_id) == (used, used)


def test_a_declared_size_that_would_cross_the_limit_is_deferred_at_rcpt(
    server: ServerThread,
) -> None:
    inbox = server.create_inbox("bot@example.test")
    set_limits(server, inbox.account_id, storage_limit=1000)
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo("client.sender.test")
        assert client.mail("alice@sender.test", ["SIZE=5000"])[0] == 250
        code, text = client.rcpt("bot@example.test")
        assert (code, text[:5]) == (452, b"4.2.2")
        client.rset()
        assert client.mail("alice@sender.test", ["SIZE=900"])[0] == 250
        assert client.rcpt("bot@example.test")[0] == 250


def test_a_message_crossing_the_limit_is_deferred_at_end_of_data_until_space_is_freed(
    server: ServerThread,
) -> None:
    inbox = server.create_inbox("bot@example.test")
    other = server.create_inbox("other@example.test")
    set_limits(server, inbox.account_id, storage_limit=3000)
    deliver(server, "bot@example.test", 2000)
    data = message("bot@example.test", 1500, "crosses")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        assert client.rcpt("bot@example.test")[0] == 250  # 2000 < 3000: room for something
        assert client.rcpt("other@example.test")[0] == 250
        code, text = client.data(data)
    assert (code, text[:5]) == (452, b"4.2.2")  # one reply for both: the sender retries both
    assert stored_count(server, inbox) == 1
    assert stored_count(server, other) == 0
    used, summed = storage(server, inbox.account_id)
    assert used == summed < 3000
    # The user deletes the old message over IMAP: the retry gets in.
    key = server.create_key(inbox.account_id)
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
    imap.login("bot@example.test", key)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    assert imap.expunge()[0] == "OK"
    imap.logout()
    assert storage(server, inbox.account_id) == (0, 0)
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        refused = client.sendmail(
            "alice@sender.test", ["bot@example.test", "other@example.test"], data
        )
    assert refused == {}
    assert stored_count(server, inbox) == 1 and stored_count(server, other) == 1
    [(size,)] = server.query(select(m.messages.c.size).where(m.messages.c.inbox_id == inbox.id))
    assert size > len(data)  # with our Received header
    assert storage(server, inbox.account_id) == (size, size)


# --- IMAP -----------------------------------------------------------------------------------


@pytest.fixture
def bot(server: ServerThread) -> Inbox:
    return server.create_inbox("bot@example.test")


@pytest.fixture
def imap(server: ServerThread, bot: Inbox) -> Iterator[ImapLine]:
    line = ImapLine(server.imap_port)
    line.read()
    line.command("l", f"LOGIN bot@example.test {server.create_key(bot.account_id)}")
    yield line
    line.close()


APPENDED = b"From: a@example.test\r\nSubject: appended\r\n\r\n" + b"y" * 1400 + b"\r\n"


def append(imap: ImapLine, tag: str, mailbox: str = "INBOX", data: bytes = APPENDED) -> bytes:
    imap.send(f"{tag} APPEND {mailbox} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    return imap.until_tagged(tag)[-1]


def test_quota_capability_and_getquotaroot_report_storage_in_kib(
    server: ServerThread, bot: Inbox, imap: ImapLine
) -> None:
    [caps, _] = imap.command("c", "CAPABILITY")
    assert b" QUOTA " in caps and b" QUOTA=RES-STORAGE" in caps and b"QUOTASET" not in caps
    assert imap.command("q1", "GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT "INBOX"\r\n',
        b"q1 OK GETQUOTAROOT completed\r\n",
    ]  # no limit: no quota root (RFC 9208 §4.3)
    assert imap.command("q2", 'GETQUOTA ""')[-1].startswith(b"q2 NO [NONEXISTENT]")
    set_limits(server, bot.account_id, storage_limit=10 * 1024 + 1000)
    assert append(imap, "a1").startswith(b"a1 OK [APPENDUID")
    assert imap.command("q3", "GETQUOTAROOT Sent") == [
        b'* QUOTAROOT "Sent" ""\r\n',
        b'* QUOTA "" (STORAGE 2 10)\r\n',  # 1445 bytes: 2 KiB used; 11240 bytes: 10 KiB
        b"q3 OK GETQUOTAROOT completed\r\n",
    ]
    assert imap.command("q4", 'GETQUOTA ""') == [
        b'* QUOTA "" (STORAGE 2 10)\r\n',
        b"q4 OK GETQUOTA completed\r\n",
    ]
    assert imap.command("q5", 'SETQUOTA "" (STORAGE 99999)')[-1].startswith(b"q5 NO [NOPERM]")
    assert imap.command("q6", "GETQUOTAROOT Nowhere")[-1].startswith(b"q6 NO [NONEXISTENT]")


def test_append_and_copy_over_quota_are_no_overquota_and_store_nothing(
    server: ServerThread, bot: Inbox, imap: ImapLine
) -> None:
    size = len(APPENDED)
    set_limits(server, bot.account_id, storage_limit=2 * size)
    assert append(imap, "a1").startswith(b"a1 OK")
    assert append(imap, "a2", "Archive").startswith(b"a2 OK")
    assert append(imap, "a3").startswith(b"a3 NO [OVERQUOTA]")
    assert storage(server, bot.account_id) == (2 * size, 2 * size)
    imap.command("s", "SELECT INBOX")
    assert imap.command("c1", "COPY 1 Archive")[-1].startswith(b"c1 NO [OVERQUOTA]")
    # A move stores nothing more: allowed even when full.
    assert imap.command("m1", "MOVE 1 Trash")[-1].startswith(b"m1 OK")
    assert storage(server, bot.account_id) == (2 * size, 2 * size)
    [(count,)] = server.query(select(func.count()).select_from(m.entries))
    assert count == 2
    # Deleting one frees its space: APPEND works again.
    imap.command("s2", "SELECT Trash")
    imap.command("f", "STORE 1 +FLAGS (\\Deleted)")
    assert imap.command("e", "EXPUNGE")[-1].startswith(b"e OK")
    assert storage(server, bot.account_id) == (size, size)
    assert append(imap, "a4").startswith(b"a4 OK")
    assert storage(server, bot.account_id) == (2 * size, 2 * size)


# --- submission -----------------------------------------------------------------------------


@pytest.fixture
def sending(tmp_path: Path, database_url: str) -> Iterator[Sending]:
    running = start_sending(tmp_path, database_url, submission_port=free_port())
    yield running
    running.stop()


def submit(sending: Sending, key: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", sending.server.submission_port, timeout=30)
    smtp.ehlo("client.test")
    smtp.starttls(context=sending.client_context())
    smtp.ehlo("client.test")
    smtp.login("bot@example.test", key)
    return smtp


SUBMITTED = b"From: bot@example.test\r\nTo: alice@remote.test\r\nSubject: hi\r\n\r\nHello.\r\n"


def test_submission_stops_at_the_daily_send_limit_with_451_4_7_1(sending: Sending) -> None:
    bot, key = sending.inbox("bot@example.test")
    set_limits(sending.server, bot.account_id, daily_send_limit=1)
    first, second = submit(sending, key), submit(sending, key)
    try:
        # Both pass MAIL before either is queued; the count at end of data decides.
        for smtp in (first, second):
            assert smtp.mail("bot@example.test")[0] == 250
            assert smtp.rcpt("alice@remote.test")[0] == 250
        assert first.data(SUBMITTED)[0] == 250
        code, text = second.data(SUBMITTED)
        assert (code, text[:5]) == (451, b"4.7.1")
        code, text = first.mail("bot@example.test")  # refused early from now on
        assert (code, text[:5]) == (451, b"4.7.1")
    finally:
        first.close()
        second.close()
    assert len(sending.server.query(select(m.outbound_messages.c.id))) == 1
    # The next UTC day starts a new count.
    sending.clock.advance(24 * 3600)
    with submit(sending, key) as smtp:
        assert smtp.sendmail("bot@example.test", ["alice@remote.test"], SUBMITTED) == {}
    assert len(sending.server.query(select(m.outbound_messages.c.id))) == 2


def test_a_local_recipient_over_quota_is_retried_by_the_queue_until_it_has_room(
    sending: Sending,
) -> None:
    bot, key = sending.inbox("bot@example.test")
    peer, _ = sending.inbox("peer@example.test")  # another account
    set_limits(sending.server, peer.account_id, storage_limit=10)
    with sending.api(key) as api:
        r = api.post(
            f"/inboxes/{bot.id}/messages/send",
            json={"to": "peer@example.test", "subject": "Ping", "text": "ping"},
        )
        assert r.status_code == 200, r.text
    sending.settled(1)
    [(status, reply)] = sending.server.query(
        select(m.outbound_recipients.c.status, m.outbound_recipients.c.last_reply)
    )
    assert status == "queued" and reply.startswith("452 4.2.2")
    assert stored_count(sending.server, peer) == 0
    set_limits(sending.server, peer.account_id, storage_limit=None)
    sending.clock.advance(3600)  # past the retry's time
    worker = sending.server.app.outbound
    assert worker is not None
    sending.server.loop.call_soon_threadsafe(worker.wake)
    sending.settled(2)
    assert stored_count(sending.server, peer) == 1
    assert (
        storage(sending.server, peer.account_id)[0] == storage(sending.server, peer.account_id)[1]
    )


def test_local_deliveries_never_take_an_account_over_its_limit(sending: Sending) -> None:
    """One message to six inboxes of an account with room for one more copy: each copy is
    checked against what the ones before it took, with the account locked in the transaction
    that stores them (so deliveries settled together, or on two nodes, cannot overshoot)."""
    bot, key = sending.inbox("bot@example.test")
    first, _ = sending.inbox("peer0@example.test")  # another account
    peers = [first] + [
        sending.server.create_inbox(f"peer{n}@example.test", first.account_id) for n in range(1, 6)
    ]
    mail = {"subject": "Ping", "text": "ping " * 200}
    with sending.api(key) as api:
        r = api.post(f"/inboxes/{bot.id}/messages/send", json={**mail, "to": first.address})
        assert r.status_code == 200, r.text
        sending.settled(1)
        size, _ = storage(sending.server, first.account_id)
        limit = size * 2 + size // 2  # room for one more copy
        set_limits(sending.server, first.account_id, storage_limit=limit)
        to = [p.address for p in peers]
        r = api.post(f"/inboxes/{bot.id}/messages/send", json={**mail, "to": to})
        assert r.status_code == 200, r.text
    sending.settled(7)
    used, stored = storage(sending.server, first.account_id)
    assert used == stored <= limit
    assert sum(stored_count(sending.server, p) for p in peers) == 2
    replies = sending.server.query(
        select(m.outbound_recipients.c.status, m.outbound_recipients.c.last_reply)
    )
    deferred = [reply for status, reply in replies if status == "queued"]
    assert len(deferred) == 5 and all(reply.startswith("452 4.2.2") for reply in deferred)
