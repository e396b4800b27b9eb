"""What a store going away looks like to clients, and that the server needs no restart after.

- The database, as in a PostgreSQL restart: every connection of the server's database killed
  and new ones refused (PostgreSQL only: an embedded SQLite file has no server to lose).
- The S3 blob store: moto's server mode stopped, then started again on the same port with the
  same objects, as an S3 endpoint goes down and comes back (the database is SQLite there).

Meanwhile each surface answers a temporary failure its clients know to retry (SMTP 451 4.3.0,
keeping nothing; IMAP ``NO [UNAVAILABLE]`` with the session kept; HTTP 503 ``unavailable``),
and afterwards the same server, and the same IMAP session, serve every message. A message the
recipient's MX accepted just as the database went away is recorded once it is back, and not
delivered again; so is a webhook its endpoint accepted then."""

from __future__ import annotations

import email.policy
import imaplib
import logging
import smtplib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from api.apiserver import Api, idle, setup_hook, start_api
from api.webhook_receiver import Received, Receiver
from e2e.sending import Sending, start_sending
from mailboxkit.store import models as m
from mailserver.outbound.sink import SinkHandler

from harness import ImapLine, OwnDatabase, ServerThread, free_port, server_settings

ADDRESS = "agent@example.test"
REGION = "us-east-1"
UNAVAILABLE = b"[UNAVAILABLE] Mail store temporarily unavailable, try again later"


def message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg.set_content(f"{subject} the outage\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def send(server: ServerThread, raw: bytes) -> tuple[int, bytes]:
    """The server's reply to RCPT, else to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("sender@remote.test")
        code, text = smtp.rcpt(ADDRESS)
        if code != 250:
            return code, text
        return smtp.data(raw)


def bodies(client: imaplib.IMAP4) -> list[bytes]:
    status, data = client.fetch("1:*", "(BODY.PEEK[])")
    assert status == "OK"
    return [part[1] for part in data if isinstance(part, tuple)]


# --- the database -------------------------------------------------------------------------


@pytest.fixture
def database(own_database: OwnDatabase) -> OwnDatabase:
    return own_database


@pytest.fixture
def on_postgres(tmp_path: Path, database: OwnDatabase) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(tmp_path / "data", database.url, imap_port=free_port()))
    running.start()
    yield running
    database.reconnect()  # if the test failed with it cut off
    running.stop()


def test_database_cut_off_then_back(
    on_postgres: ServerThread, database: OwnDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    server = on_postgres
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    headers = {"Authorization": f"Bearer {key}"}
    messages_url = f"{server.http_url}/api/v1/inboxes/{inbox.id}/messages"
    before, after = message("Before"), message("After")
    assert send(server, before)[0] == 250
    session = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    session.login(ADDRESS, key)
    assert session.select("INBOX") == ("OK", [b"1"])
    reselecting = ImapLine(server.imap_port)  # raw, to see the server's state after a failure
    reselecting.read()
    assert reselecting.command("a", f'LOGIN {ADDRESS} "{key}"')[-1].startswith(b"a OK")
    assert reselecting.command("b", "SELECT INBOX")[-1].startswith(b"b OK")

    database.cut_off()

    code, text = send(server, message("During"))
    assert (code, text[:5]) == (451, b"4.3.0")
    assert session.status("INBOX", "(MESSAGES)") == ("NO", [UNAVAILABLE])
    assert session.noop()[0] == "OK"  # the session goes on
    # A SELECT that fails leaves no mailbox selected (RFC 3501 §6.3.1).
    assert reselecting.command("c", "SELECT INBOX")[-1] == b"c NO " + UNAVAILABLE + b"\r\n"
    assert reselecting.command("d", "FETCH 1 (FLAGS)")[-1] == b"d BAD No mailbox selected\r\n"
    reselecting.close()
    newcomer = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        newcomer.login(ADDRESS, key)
    newcomer.logout()
    with httpx.Client(timeout=10) as http:
        response = http.get(messages_url, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"] == "5"
        sent = http.post(
            f"{messages_url}/send",
            headers=headers,
            json={"to": "someone@remote.test", "subject": "During", "text": "not now"},
        )
        assert (sent.status_code, sent.json()["error"]["code"]) == (503, "unavailable")
        assert http.get(f"{server.http_url}/readyz").status_code == 503

    database.reconnect()

    assert send(server, after)[0] == 250
    assert session.status("INBOX", "(MESSAGES)") == ("OK", [b'"INBOX" (MESSAGES 2)'])
    assert session.noop()[0] == "OK"  # the new message's EXISTS
    stored = bodies(session)
    assert len(stored) == 2  # each as received, behind our Received: header
    assert stored[0].endswith(before)
    assert stored[1].endswith(after)
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


@dataclass
class CuttingOff(SinkHandler):
    """A recipient's MX that, before it says 250, cuts the sending server off from its
    database: the delivery succeeds, recording it cannot, for now."""

    database: OwnDatabase | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert self.database is not None
        self.database.cut_off()
        return await super().handle_DATA(server, session, envelope)


def send_as_it_is_cut_off(sending: Sending) -> str:
    """Send one message through the API; return when the MX (a CuttingOff) has it."""
    inbox, key = sending.inbox("bot@example.test")
    with sending.api(key) as api:
        sent = api.post(
            f"/inboxes/{inbox.id}/messages/send",
            json={"to": "alice@remote.test", "subject": "Once", "text": "only once"},
        )
    assert sent.status_code == 200
    assert sending.sink.next().rcpt_tos == ("alice@remote.test",)
    message_id: str = sent.json()["message_id"]
    return message_id


def test_database_lost_between_a_delivery_and_its_record(
    tmp_path: Path, database: OwnDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailboxkit.mailserver.outbound.worker")
    handler = CuttingOff(database=database)
    sending = start_sending(tmp_path, database.url, handler)
    try:
        message_id = send_as_it_is_cut_off(sending)
        database.reconnect()
        sending.settled(1)  # recorded once the database answered again
        r = m.outbound_recipients.c
        rows = sending.server.query(select(r.status, r.attempts, r.lease_until))
        assert [tuple(row) for row in rows] == [("sent", 1, None)]  # never claimed again
        assert handler.attempts == 1
        [event] = sending.events("message.sent")
        assert event.message_id == message_id
        messages = [r.getMessage() for r in caplog.records]
        assert any("outbound_settle_failed" in text for text in messages)
        assert any("outbound_settled_late" in text for text in messages)
    finally:
        database.reconnect()
        sending.stop()


def test_stop_while_the_database_is_out_of_reach(
    tmp_path: Path, database: OwnDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording outcomes again gives way to a stop: it ends within its grace, and the
    recipient, its claim kept, is delivered again when the lease ends."""
    caplog.set_level(logging.INFO, logger="mailboxkit.mailserver.outbound.worker")
    sending = start_sending(tmp_path, database.url, CuttingOff(database=database))
    try:
        send_as_it_is_cut_off(sending)
        sending.server.stop()  # raises TimeoutError if it waits on the database
    finally:
        database.reconnect()
        sending.sink.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("outbound_settle_abandoned size=1" in text for text in messages)


def test_database_lost_between_a_webhook_and_its_record(
    tmp_path: Path, database: OwnDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint answers 200 just after the database went away: the attempt is recorded
    once it is back, and the event is not sent again."""
    caplog.set_level(logging.INFO, logger="mailboxkit.api.dispatcher")
    cut = threading.Event()

    def cut_off_then_accept(_got: Received) -> tuple[int, dict[str, str]]:
        if not cut.is_set():
            database.cut_off()
            cut.set()
        return 200, {}

    receiver = Receiver()
    receiver.answer = cut_off_then_accept
    receiver.start()
    server, clock = start_api(tmp_path, database.url)
    api = Api(server, clock)
    try:
        owner, hook = setup_hook(api, receiver.url(), events=["message.received"])
        api.send(owner["email"], message("Hooked"))
        assert cut.wait(30)
        database.reconnect()
        idle(api)  # the attempt recorded: nothing in flight, nothing due
        with api.client(owner["api_key"]) as c:
            log = c.get(f"/webhooks/{hook['webhook_id']}/deliveries").json()
        [delivery] = log["deliveries"]
        assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
        assert len(receiver.all) == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("webhook_record_failed" in text for text in messages)
        assert any("webhook_recorded_late" in text for text in messages)
    finally:
        database.reconnect()
        server.stop()
        receiver.stop()


# --- the S3 blob store --------------------------------------------------------------------


class S3Endpoint:
    """moto's S3 on one fixed port; its objects live in this process, across restarts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.moto: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.moto.start()

    def stop(self) -> None:
        if self.moto is not None:
            self.moto.stop()
            self.moto = None


@pytest.fixture
def s3(aws_env: None) -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def on_s3(tmp_path: Path, s3: S3Endpoint) -> Iterator[ServerThread]:
    bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3.url, region_name=REGION)
    client.create_bucket(Bucket=bucket)
    client.close()
    settings = server_settings(
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'mailboxkit.db'}",
        migrate_on_start=True,
        imap_port=free_port(),
        blob_url=f"s3://{bucket}/mail",
        s3_endpoint_url=s3.url,
        s3_region=REGION,
    )
    running = ServerThread(settings)
    running.start()
    yield running
    running.stop()


def test_s3_endpoint_down_then_back(on_s3: ServerThread, s3: S3Endpoint) -> None:
    server = on_s3
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    before, after = message("Before"), message("After")
    assert send(server, before)[0] == 250
    session = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    session.login(ADDRESS, key)
    assert session.select("INBOX") == ("OK", [b"1"])
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        listed = http.get(f"{server.http_url}/api/v1/inboxes/{inbox.id}/messages").json()
        raw_url = (
            f"{server.http_url}/api/v1/inboxes/{inbox.id}/messages/"
            f"{listed['messages'][0]['message_id']}/raw"
        )

        s3.stop()

        code, text = send(server, message("During"))
        assert (code, text[:5]) == (451, b"4.3.0")
        status, data = session.fetch("1", "(BODY.PEEK[])")
        assert (status, data[-1]) == ("NO", UNAVAILABLE)
        assert session.noop()[0] == "OK"  # the session goes on
        response = http.get(raw_url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        ready = http.get(f"{server.http_url}/readyz")
        assert (ready.status_code, ready.json()["error"]["message"]) == (
            503,
            "blob store unavailable",
        )

        s3.start()

        assert http.get(f"{server.http_url}/readyz").status_code == 200
        assert send(server, after)[0] == 250
        assert session.noop()[0] == "OK"  # the new message's EXISTS
        stored = bodies(session)
        assert len(stored) == 2  # each as received, behind our Received: header
        assert stored[0].endswith(before)
        assert stored[1].endswith(after)
        raw = http.get(raw_url)
        assert raw.status_code == 200
        assert raw.content == stored[0]
    session.logout()
