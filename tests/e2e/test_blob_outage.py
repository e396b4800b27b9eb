"""The S3 blob store out of reach (moto's server mode stopped, then started again on the same
port with the same objects, as an S3 endpoint goes down and comes back): SMTP answers 451 4.3.0
and keeps nothing, IMAP ``NO [UNAVAILABLE]`` for a body with the session kept, the API 503
``unavailable`` for raw bytes; afterwards the same server and session serve every byte. The
database is SQLite here: the database's own outage is tests/e2e/test_database_outage.py."""

from __future__ import annotations

import email.policy
import imaplib
import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from moto.server import ThreadedMotoServer

from harness import ServerThread, free_port, server_settings

ADDRESS = "agent@example.test"
REGION = "us-east-1"


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
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3Endpoint]:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = S3Endpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def server(tmp_path: Path, s3: S3Endpoint) -> Iterator[ServerThread]:
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


def message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = ADDRESS
    msg["Subject"] = subject
    msg.set_content(f"{subject} the outage\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def send(server: ServerThread, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("sender@remote.test")
        assert smtp.rcpt(ADDRESS)[0] == 250
        return smtp.data(raw)


def test_each_surface_says_try_again_and_recovers(server: ServerThread, s3: S3Endpoint) -> None:
    inbox = server.create_inbox(ADDRESS)
    key = server.create_key(inbox.account_id)
    before = message("Before")
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
        assert (status, data[-1]) == (
            "NO",
            b"[UNAVAILABLE] Mail store temporarily unavailable, try again later",
        )
        assert session.noop()[0] == "OK"  # the session goes on
        response = http.get(raw_url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"

        s3.start()

        after = message("After")
        assert send(server, after)[0] == 250
        assert session.noop()[0] == "OK"  # the new message's EXISTS
        status, data = session.fetch("1:*", "(BODY.PEEK[])")
        assert status == "OK"
        bodies = [part[1] for part in data if isinstance(part, tuple)]
        assert len(bodies) == 2  # each as received, behind our Received: header
        assert bodies[0].endswith(before)
        assert bodies[1].endswith(after)
        raw = http.get(raw_url)
        assert raw.status_code == 200
        assert raw.content == bodies[0]
    session.logout()
