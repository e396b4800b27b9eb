"""IMAP session commands against the running server: greeting, CAPABILITY, LOGIN,
AUTHENTICATE PLAIN (SASL-IR), ID, ENABLE, NAMESPACE, NOOP, LOGOUT, STARTTLS, implicit TLS,
limits, timeouts and error handling."""

from __future__ import annotations

import base64
import imaplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap import dispatch

from harness import ImapLine, ServerThread, free_port, server_settings

ADDRESS = "bot@example.test"


def start(tmp_path: Path, database_url: str, **overrides: Any) -> ServerThread:
    values: dict[str, Any] = {"imap_port": free_port(), "imap_auth_failure_delay": 0}
    values.update(overrides)
    running = ServerThread(server_settings(tmp_path / "data", database_url, **values))
    running.start()
    return running


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerThread]:
    running = start(tmp_path, database_url)
    yield running
    running.stop()


@pytest.fixture
def key(server: ServerThread) -> str:
    inbox = server.create_inbox(ADDRESS)
    return server.create_key(inbox.account_id)


def test_greeting_lists_capabilities_and_login_works(server: ServerThread, key: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    caps = client.capabilities
    for cap in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "SASL-IR"):
        assert cap in caps
    assert "AUTH=PLAIN" in caps  # loopback listener: plaintext allowed
    assert any(cap.startswith("APPENDLIMIT=") for cap in caps)
    typ, data = client.login(ADDRESS, key)
    assert typ == "OK"
    assert b"[CAPABILITY " in data[0]
    typ, _ = client.noop()
    assert typ == "OK"
    typ, data = client.logout()
    assert typ == "BYE"


def test_login_is_case_insensitive_and_accepts_plus_tags(server: ServerThread, key: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    assert client.login("Bot+tag@Example.TEST", key)[0] == "OK"
    client.logout()


def test_wrong_password_and_foreign_keys_fail_alike(server: ServerThread, key: str) -> None:
    other = server.create_inbox("other@example.test")
    other_key = server.create_key(other.account_id)
    mine = server.create_inbox("second@example.test", account_id=other.account_id)
    scoped = server.create_key(other.account_id, inbox_id=mine.id)
    for user, password in (
        (ADDRESS, key + "x"),
        (ADDRESS, other_key),  # a key of another account
        ("other@example.test", scoped),  # a key scoped to another inbox of the account
        ("nobody@example.test", key),
    ):
        client = imaplib.IMAP4("127.0.0.1", server.imap_port)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user, password)
        client.shutdown()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    assert client.login("second@example.test", scoped)[0] == "OK"
    client.logout()


def test_authenticate_plain_with_and_without_initial_response(
    server: ServerThread, key: str
) -> None:
    with IMAPClient("127.0.0.1", port=server.imap_port, ssl=False) as client:
        client.plain_login(ADDRESS, key)  # SASL-IR: the response on the command line
        assert client.namespace().personal == (("", "/"),)
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    message = f"\0{ADDRESS}\0{key}".encode()
    typ, _ = client.authenticate("PLAIN", lambda challenge: message)
    assert typ == "OK"
    client.logout()


def test_authenticate_cancel_and_bad_base64(server: ServerThread, key: str) -> None:
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert conn.read() == b"+ \r\n"
    conn.send(b"*\r\n")
    assert conn.read().startswith(b"a1 BAD ")
    conn.send(b"a2 AUTHENTICATE PLAIN\r\n")
    conn.read()
    conn.send(b"!!notbase64\r\n")
    assert conn.read().startswith(b"a2 BAD ")
    conn.send(b"a3 AUTHENTICATE CRAM-MD5\r\n")
    assert conn.read().startswith(b"a3 NO ")
    plain = base64.b64encode(f"\0{ADDRESS}\0{key}".encode())
    conn.send(b"a4 AUTHENTICATE PLAIN " + plain + b"\r\n")
    assert conn.until_tagged("a4")[-1].startswith(b"a4 OK [CAPABILITY ")
    conn.close()


def test_id_enable_namespace(server: ServerThread, key: str) -> None:
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(b'a1 ID ("name" "test")\r\n')
    assert conn.until_tagged("a1") == [
        b'* ID ("name" "MailboxKit" "vendor" "MailboxKit")\r\n',
        b"a1 OK ID completed\r\n",
    ]
    conn.send(b"a2 ENABLE CONDSTORE\r\n")
    assert conn.read() == b"a2 BAD Log in first\r\n"
    conn.send(f"a3 LOGIN {ADDRESS} {key}\r\n".encode())
    conn.until_tagged("a3")
    conn.send(b"a4 ENABLE CONDSTORE X-UNKNOWN\r\n")
    assert conn.until_tagged("a4") == [b"* ENABLED CONDSTORE\r\n", b"a4 OK ENABLE completed\r\n"]
    conn.send(b"a5 ENABLE CONDSTORE\r\n")
    assert conn.until_tagged("a5")[0] == b"* ENABLED\r\n"
    conn.send(b"a6 NAMESPACE\r\n")
    assert conn.until_tagged("a6")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    conn.send(b"a7 LOGOUT\r\n")
    assert conn.until_tagged("a7") == [b"* BYE Logging out\r\n", b"a7 OK LOGOUT completed\r\n"]
    assert conn.read() == b""
    conn.close()


def test_bad_syntax_and_wrong_state_get_bad_with_reason(server: ServerThread, key: str) -> None:
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(b"a1 FROBNICATE\r\n")
    assert conn.read() == b"a1 BAD Unknown command\r\n"
    conn.send(b"\r\n")
    assert conn.read().startswith(b"* BAD ")
    conn.send(b"a2 SELECT INBOX\r\n")
    assert conn.read() == b"a2 BAD Log in first\r\n"
    conn.send(f"a3 LOGIN {ADDRESS} {key}\r\n".encode())
    conn.until_tagged("a3")
    conn.send(b"a4 FETCH 1 FLAGS\r\n")
    assert conn.read() == b"a4 BAD No mailbox selected\r\n"
    conn.send(b"a5 LOGIN a b\r\n")
    assert conn.read() == b"a5 BAD Command not valid in this state\r\n"
    conn.send(b"a6 GETQUOTAROOT\r\n")
    assert conn.read().startswith(b"a6 BAD ")
    conn.send(b"a7 NOOP extra\r\n")
    assert conn.read() == b"a7 BAD Unexpected extra arguments\r\n"
    conn.close()


def test_unexpected_error_is_bad_and_server_stays_up(
    server: ServerThread, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(dispatch.HANDLERS, c.Namespace, broken)
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(f"a1 LOGIN {ADDRESS} {key}\r\na2 NAMESPACE\r\na3 NOOP\r\n".encode())
    conn.until_tagged("a1")
    assert conn.read() == b"a2 BAD [SERVERBUG] Internal server error\r\n"
    assert conn.read() == b"a3 OK NOOP completed\r\n"
    conn.close()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port)
    assert client.login(ADDRESS, key)[0] == "OK"
    client.logout()


def test_select_failing_unexpectedly_leaves_no_mailbox_selected(
    server: ServerThread, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected, whatever the failure.
    select = dispatch.HANDLERS[c.Select]

    async def broken_for_archive(ctx: Any, state: Any, command: Any) -> Any:
        if command.mailbox == "Archive":
            raise RuntimeError("boom")
        return await select(ctx, state, command)

    monkeypatch.setitem(dispatch.HANDLERS, c.Select, broken_for_archive)
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(f"a1 LOGIN {ADDRESS} {key}\r\na2 SELECT INBOX\r\n".encode())
    conn.until_tagged("a1")
    assert conn.until_tagged("a2")[-1].startswith(b"a2 OK [READ-WRITE]")
    conn.send(b"a3 SELECT Archive\r\n")
    assert conn.read() == b"a3 BAD [SERVERBUG] Internal server error\r\n"
    conn.send(b"a4 FETCH 1:* FLAGS\r\n")
    assert conn.read() == b"a4 BAD No mailbox selected\r\n"
    conn.close()


def test_failed_logins_are_counted_per_address(tmp_path: Path, database_url: str) -> None:
    server = start(tmp_path, database_url, imap_max_auth_failures=2)
    try:
        inbox = server.create_inbox(ADDRESS)
        key = server.create_key(inbox.account_id)
        client = imaplib.IMAP4("127.0.0.1", server.imap_port)
        for _ in range(2):
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login(ADDRESS, "mbk_wrong")
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            client.login(ADDRESS, key)  # even the right key, from this address, for a while
        client.shutdown()
    finally:
        server.stop()


def test_connections_per_address_are_limited(tmp_path: Path, database_url: str) -> None:
    server = start(tmp_path, database_url, imap_max_connections_per_ip=2)
    try:
        first, second = ImapLine(server.imap_port), ImapLine(server.imap_port)
        assert first.read().startswith(b"* OK ")
        assert second.read().startswith(b"* OK ")
        third = ImapLine(server.imap_port)
        assert third.read() == b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
        assert third.read() == b""
        first.send(b"a LOGOUT\r\n")
        first.until_tagged("a")
        assert first.read() == b""
        for conn in (first, second, third):
            conn.close()
    finally:
        server.stop()


def test_login_timeout_says_bye(tmp_path: Path, database_url: str) -> None:
    server = start(tmp_path, database_url, imap_login_timeout=0.3)
    try:
        conn = ImapLine(server.imap_port)
        conn.read()
        assert conn.read() == b"* BYE Autologout; idle for too long\r\n"
        assert conn.read() == b""
        conn.close()
    finally:
        server.stop()


def test_long_line_is_refused_and_session_continues(server: ServerThread, key: str) -> None:
    conn = ImapLine(server.imap_port)
    conn.read()
    conn.send(b"a1 NOOP " + b"x" * 70000 + b"\r\na2 NOOP\r\n")
    assert conn.read() == b"a1 BAD [LIMIT] Command line too long\r\n"
    assert conn.read() == b"a2 OK NOOP completed\r\n"
    conn.close()


def test_starttls_then_login_when_not_on_loopback(tmp_path: Path, database_url: str) -> None:
    # 127.0.0.2 is loopback on Linux, but not one of the binds that allow plaintext logins.
    server = start(tmp_path, database_url, bind="127.0.0.2")
    try:
        inbox = server.create_inbox(ADDRESS)
        key = server.create_key(inbox.account_id)
        client = imaplib.IMAP4("127.0.0.2", server.imap_port)
        assert "LOGINDISABLED" in client.capabilities
        assert "STARTTLS" in client.capabilities
        assert "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(ADDRESS, key)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context)
        assert "LOGINDISABLED" not in client.capabilities
        assert "STARTTLS" not in client.capabilities
        assert client.login(ADDRESS, key)[0] == "OK"
        client.logout()
    finally:
        server.stop()


def test_data_pipelined_after_starttls_ends_the_session(tmp_path: Path, database_url: str) -> None:
    server = start(tmp_path, database_url, bind="127.0.0.2")
    try:
        conn = ImapLine(server.imap_port, "127.0.0.2")
        conn.read()
        conn.send(b"a1 STARTTLS\r\na2 LOGIN injected command\r\n")
        assert conn.read() == b"a1 OK Begin TLS negotiation now\r\n"
        assert conn.read() == b"* BYE Data pipelined after STARTTLS\r\n"
        assert conn.read() == b""
        conn.close()
    finally:
        server.stop()


def test_implicit_tls_listener(tmp_path: Path, database_url: str) -> None:
    server = start(tmp_path, database_url, imap_port=0, imaps_port=free_port())
    try:
        inbox = server.create_inbox(ADDRESS)
        key = server.create_key(inbox.account_id)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=context)
        assert "STARTTLS" not in client.capabilities
        assert client.login(ADDRESS, key)[0] == "OK"
        client.logout()
    finally:
        server.stop()
