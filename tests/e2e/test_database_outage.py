"""The database out of reach, as in a PostgreSQL restart: every connection of the server's
database killed and new ones refused. Each surface answers a temporary failure its clients know
to retry (SMTP 451 4.3.0, IMAP ``NO [UNAVAILABLE]`` with the session kept, HTTP 503
``unavailable`` with ``Retry-After``, ``/readyz`` 503), nothing half-delivered is left behind,
and once connections are allowed again the same server, and the same IMAP session, work on
without a restart. PostgreSQL only: an embedded SQLite file has no server to lose."""

from __future__ import annotations

import asyncio
import imaplib
import logging
import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import POSTGRES_URL, _async_url
from mailboxkit.store.migrate import upgrade

from harness import ServerThread, free_port, server_settings

ADDRESS = "agent@example.test"


def admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)  # another database: never cut off
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def database() -> Iterator[str]:
    """A migrated database of this test alone (its name), so cutting it harms no other."""
    name = f"mbk_outage_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}"')
    upgrade(_async_url(f"{POSTGRES_URL.rpartition('/')[0]}/{name}"))
    yield name
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cut_off(name: str) -> None:
    admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def reconnect(name: str) -> None:
    admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def server(tmp_path: Path, database: str) -> Iterator[ServerThread]:
    url = _async_url(f"{POSTGRES_URL.rpartition('/')[0]}/{database}")
    running = ServerThread(server_settings(tmp_path / "data", url, imap_port=free_port()))
    running.start()
    yield running
    reconnect(database)  # the server's stop needs its database back
    running.stop()


def message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg.set_content(f"{subject} the outage\n")
    return msg.as_bytes()


def send(server: ServerThread, subject: str) -> tuple[int, bytes]:
    """The server's reply to RCPT, else to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@remote.test")
        code, text = smtp.rcpt(ADDRESS)
        if code != 250:
            return code, text
        return smtp.data(message(subject))


def subjects(client: imaplib.IMAP4) -> list[bytes]:
    status, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status == "OK"
    return [part[1].strip() for part in data if isinstance(part, tuple)]


def test_each_surface_says_try_again_and_recovers(
    server: ServerThread, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    headers = {"Authorization": f"Bearer {key}"}
    messages_url = f"{server.http_url}/api/v1/inboxes/{inbox.id}/messages"
    assert send(server, "Before")[0] == 250
    session = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    session.login(ADDRESS, key)
    assert session.select("INBOX") == ("OK", [b"1"])

    cut_off(database)

    code, text = send(server, "During")
    assert (code, text[:5]) == (451, b"4.3.0")
    status, data = session.status("INBOX", "(MESSAGES)")
    assert (status, data[0]) == (
        "NO",
        b"[UNAVAILABLE] Mail store temporarily unavailable, try again later",
    )
    assert session.noop()[0] == "OK"  # the session goes on
    newcomer = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        newcomer.login(ADDRESS, key)
    newcomer.logout()
    with httpx.Client(timeout=10) as http:
        response = http.get(messages_url, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"] == "5"
        assert http.get(f"{server.http_url}/readyz").status_code == 503

    reconnect(database)

    assert send(server, "After")[0] == 250
    assert session.status("INBOX", "(MESSAGES)") == ("OK", [b'"INBOX" (MESSAGES 2)'])
    assert subjects(session) == [b"Subject: Before", b"Subject: After"]
    session.logout()
    with httpx.Client(timeout=10) as http:
        response = http.get(messages_url, headers=headers)
        assert response.status_code == 200
        listed = [item["subject"] for item in response.json()["messages"]]
        assert sorted(listed) == ["After", "Before"]
        assert http.get(f"{server.http_url}/readyz").status_code == 200
    # An outage is a warning per refused command, not a server bug with its traceback.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert errors == []
    assert any("imap_store_unavailable" in r.getMessage() for r in caplog.records)
