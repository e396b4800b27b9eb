"""The store sweep against the running server: what an IMAP client expunges leaves blobs behind
until a sweep pass, which deletes exactly those no row names any more; on SQLite and
PostgreSQL, with the local blob store and with S3 (moto's server mode)."""

from __future__ import annotations

import email.policy
import imaplib
import json
import logging
import os
import smtplib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from hashlib import sha256
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import delete, select

from mailboxkit.store import models as m
from mailboxkit.store.blobs import BlobNotFound, BlobStore
from mailboxkit.store.sweep import SweepPolicy, SweepReport, sweep

from harness import ServerThread, cli, free_port, serve_env, server_settings

REGION = "us-east-1"
ALICE = "alice@example.test"
BOB = "bob@example.test"
SHARED = b"the same attached bytes, in two messages\n"
OWN = b"bytes only the second message has\n"
POLICY = SweepPolicy(message_grace=timedelta(hours=1), blob_grace=timedelta(days=1))
LATER = timedelta(days=2)  # "now" for a pass that finds every blob written today old enough


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def blob_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "local":
        return {}
    endpoint: str = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("aws_env")
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION)
    bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.close()
    return {"blob_url": f"s3://{bucket}/tenant", "s3_endpoint_url": endpoint, "s3_region": REGION}


@pytest.fixture
def server(
    tmp_path: Path, database_url: str, blob_settings: dict[str, Any]
) -> Iterator[ServerThread]:
    http_port = free_port()
    settings = server_settings(
        tmp_path / "data",
        database_url,
        http_port=http_port,
        public_url=f"http://127.0.0.1:{http_port}",  # where signed download URLs point
        imap_port=free_port(),
        imap_auth_failure_delay=0,
        store_sweep_interval=0,  # passes are driven by the tests
        **blob_settings,
    )
    running = ServerThread(settings)
    running.start()
    yield running
    running.stop()


def mail(subject: str, to: str, attachments: dict[str, bytes]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@remote.test>"
    msg.set_content(f"{subject}\n")
    for name, data in attachments.items():
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def deliver(server: ServerThread, raw: bytes, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
        smtp.sendmail("sender@remote.test", list(recipients), raw)


def imap(server: ServerThread, address: str, account_id: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    client.login(address, server.create_key(account_id))
    return client


def row_of(server: ServerThread, inbox_id: str, subject: str) -> Any:
    msg = m.messages.c
    rows = server.query(
        select(msg.id, msg.raw_key).where(msg.inbox_id == inbox_id, msg.subject == subject)
    )
    return rows[0] if rows else None


def attachment_rows(server: ServerThread, message_id: str) -> list[Any]:
    a = m.attachments.c
    return server.query(select(a.blob_key).where(a.message_id == message_id))


def stored(server: ServerThread, key: str) -> bool:
    try:
        server.blob(key)
    except BlobNotFound:
        return False
    return True


def run_sweep(server: ServerThread, now: datetime, *, dry_run: bool = False) -> SweepReport:
    app = server.app
    report: SweepReport = server.call(
        sweep(app.db, app.blobs, now=now, policy=POLICY, dry_run=dry_run)
    )
    return report


def fetch_body(client: imaplib.IMAP4, mailbox: str) -> list[bytes]:
    """Every message of ``mailbox``, whole, as the client reads them."""
    status, [count] = client.select(mailbox, readonly=True)
    assert status == "OK"
    if count == b"0":
        return []
    status, data = client.fetch("1:*", "(BODY.PEEK[])")
    assert status == "OK"
    return [item[1] for item in data if isinstance(item, tuple)]


def test_expunged_mail_leaves_blobs_until_a_sweep_which_keeps_what_others_use(
    server: ServerThread,
) -> None:
    alice = server.create_inbox(ALICE)
    bob = server.create_inbox(BOB)
    both = mail("to both", f"{ALICE}, {BOB}", {"shared.bin": SHARED})
    deliver(server, both, ALICE, BOB)  # one transaction: one raw blob for two messages
    deliver(server, mail("own", ALICE, {"shared.bin": SHARED, "own.bin": OWN}), ALICE)
    deliver(server, mail("filed", ALICE, {}), ALICE)
    alice_both, own, filed = (row_of(server, alice.id, s) for s in ("to both", "own", "filed"))
    bob_both = row_of(server, bob.id, "to both")
    assert alice_both.raw_key == bob_both.raw_key
    shared_key, own_key = f"att/{sha256(SHARED).hexdigest()}", f"att/{sha256(OWN).hexdigest()}"
    assert {r.blob_key for r in attachment_rows(server, own.id)} == {shared_key, own_key}

    with imap(server, ALICE, alice.account_id) as client:
        client.select("INBOX")
        assert client.copy("3", "Archive")[0] == "OK"  # "filed" stays in Archive
        client.store("1:3", "+FLAGS", "(\\Deleted)")
        assert client.expunge()[1] == [b"3", b"2", b"1"]
        assert fetch_body(client, "INBOX") == []

    # The expunge deleted the rows of what is in no folder any more; every blob is still there.
    assert row_of(server, alice.id, "to both") is None and row_of(server, alice.id, "own") is None
    assert attachment_rows(server, own.id) == []
    for key in (own.raw_key, own_key, shared_key, bob_both.raw_key, filed.raw_key):
        assert stored(server, key), key

    # A pass with today's clock finds nothing old enough; two days later, the unused ones go.
    assert run_sweep(server, datetime.now(UTC)) == SweepReport()
    own_size = len(server.blob(own.raw_key))
    report = run_sweep(server, datetime.now(UTC) + LATER)
    assert report == SweepReport(
        raw_blobs=1, raw_bytes=own_size, attachment_blobs=1, attachment_bytes=len(OWN)
    )
    assert not stored(server, own.raw_key) and not stored(server, own_key)
    for key in (shared_key, bob_both.raw_key, filed.raw_key):
        assert stored(server, key), key

    # What others use is still whole: the copy alice filed before expunging, and bob's copy
    # (the shared raw blob over IMAP, the shared attachment over the API).
    with imap(server, ALICE, alice.account_id) as client:
        [archived] = fetch_body(client, "Archive")
    assert archived == server.blob(filed.raw_key) and b"Subject: filed" in archived
    with imap(server, BOB, bob.account_id) as client:
        [bobs] = fetch_body(client, "INBOX")
    assert b"Subject: to both" in bobs and bobs.endswith(both.split(b"\r\n\r\n", 1)[1])
    assert download_attachment(server, bob.account_id, bob.id, bob_both.id) == SHARED
    assert run_sweep(server, datetime.now(UTC) + LATER) == SweepReport()  # nothing left to do


def download_attachment(
    server: ServerThread, account_id: str, inbox_id: str, message_id: str
) -> bytes:
    headers = {"Authorization": f"Bearer {server.create_key(account_id)}"}
    with httpx.Client(base_url=server.http_url + "/api/v1", headers=headers, timeout=10) as c:
        message = c.get(f"/inboxes/{inbox_id}/messages/{message_id}").json()
        [attachment] = message["attachments"]
        url = f"/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment['attachment_id']}"
        download = c.get(url).json()["download_url"]
    response = httpx.get(download, timeout=10)
    assert response.status_code == 200
    return response.content


async def _blob_times(blobs: BlobStore, keys: set[str]) -> dict[str, float]:
    found = {}
    for under in ("msg", "att"):
        async for info in blobs.list_blobs(under):
            if info.key in keys:
                found[info.key] = info.modified
    return found


def test_blobs_no_row_names_go_once_older_than_the_grace(server: ServerThread) -> None:
    inbox = server.create_inbox(ALICE)
    deliver(server, mail("kept", ALICE, {"a.bin": SHARED}), ALICE)
    kept = row_of(server, inbox.id, "kept")
    # What a crash between staging a batch's blobs and committing its rows leaves behind.
    orphans = {
        "msg/2026/11/27/CRASHED.eml": b"From: x@remote.test\r\n\r\nnever committed\r\n",
        f"att/{sha256(OWN).hexdigest()}": OWN,
    }
    server.call(server.app.blobs.put_many(list(orphans.items())))
    written = server.call(_blob_times(server.app.blobs, set(orphans)))
    assert set(written) == set(orphans)

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    second = timedelta(seconds=1)
    young = at(min(written.values())) + POLICY.blob_grace - second
    assert run_sweep(server, young) == SweepReport()
    assert all(stored(server, key) for key in orphans)

    old = at(max(written.values())) + POLICY.blob_grace + second
    raw_size = len(orphans["msg/2026/11/27/CRASHED.eml"])
    assert run_sweep(server, old, dry_run=True) == SweepReport(
        dry_run=True, raw_blobs=1, raw_bytes=raw_size, attachment_blobs=1, attachment_bytes=len(OWN)
    )
    assert all(stored(server, key) for key in orphans)
    assert run_sweep(server, old) == SweepReport(
        raw_blobs=1, raw_bytes=raw_size, attachment_blobs=1, attachment_bytes=len(OWN)
    )
    assert not any(stored(server, key) for key in orphans)
    with imap(server, ALICE, inbox.account_id) as client:
        [body] = fetch_body(client, "INBOX")
    assert body == server.blob(kept.raw_key) and b"Subject: kept" in body
    assert server.blob(f"att/{sha256(SHARED).hexdigest()}") == SHARED


@pytest.mark.parametrize("blob_settings", ["local"], indirect=True)
def test_cli_sweep_dry_run_reports_and_deletes_nothing(server: ServerThread) -> None:
    s = server.settings
    env = serve_env(s.data_dir, s.database_url, store_sweep_message_grace=0, log_level="WARNING")
    inbox = server.create_inbox(ALICE)
    deliver(server, mail("unfiled", ALICE, {"own.bin": OWN}), ALICE)
    unfiled = row_of(server, inbox.id, "unfiled")
    # Left in no folder (as two expunges at once can leave it on PostgreSQL).
    server.execute(delete(m.entries).where(m.entries.c.message_id == unfiled.id))
    crashed = "msg/2026/11/27/CRASHED.eml"
    server.call(server.app.blobs.put(crashed, b"never committed"))
    own_key = f"att/{sha256(OWN).hexdigest()}"
    two_days_ago = (datetime.now(UTC) - LATER).timestamp()
    for key in (crashed, unfiled.raw_key, own_key):
        os.utime(s.data_dir / "blobs" / key, (two_days_ago, two_days_ago))
    raw_size = len(server.blob(unfiled.raw_key))

    dry = cli(env, "store", "sweep", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "dry_run": True,
        "messages": 1,
        "raw_blobs": 1,  # the crashed one; the unfiled message's are named until it goes
        "raw_bytes": len(b"never committed"),
        "attachment_blobs": 0,
        "attachment_bytes": 0,
    }
    assert row_of(server, inbox.id, "unfiled") is not None
    assert all(stored(server, key) for key in (crashed, unfiled.raw_key, own_key))

    done = cli(env, "store", "sweep")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"deleted: 1 messages in no folder, 2 message blobs "
        f"({raw_size + len(b'never committed')} bytes), 1 attachment blobs ({len(OWN)} bytes)\n"
    )
    assert row_of(server, inbox.id, "unfiled") is None
    assert not any(stored(server, key) for key in (crashed, unfiled.raw_key, own_key))


class AheadClock:
    """The server's clock, two days ahead: every blob written now is old to its sweep."""

    def now(self) -> datetime:
        return datetime.now(UTC) + LATER


class SweepLog(logging.Handler):
    """Collects the sweep's log lines; ``deleted`` is set by the first pass that deleted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.deleted = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        if line.startswith("event=store_sweep ") and "raw_blobs=0 " not in line:
            self.deleted.set()


@pytest.mark.parametrize("blob_settings", ["local"], indirect=True)
def test_the_server_sweeps_every_interval_and_logs_what_it_deleted(
    tmp_path: Path, database_url: str, blob_settings: dict[str, Any]
) -> None:
    settings = server_settings(tmp_path / "data", database_url, store_sweep_interval=0.05)
    running = ServerThread(settings)
    running.app.clock = AheadClock()
    orphan = "msg/2026/11/27/CRASHED.eml"
    handler = SweepLog()
    logger = logging.getLogger("mailboxkit.store.sweep")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    running.start()
    try:
        running.call(running.app.blobs.put(orphan, b"never committed"))
        assert handler.deleted.wait(20), handler.lines
        assert not stored(running, orphan)
    finally:
        running.stop()
        logger.removeHandler(handler)
        logger.setLevel(level)
    [line] = [line for line in handler.lines if "raw_blobs=1 " in line]
    assert "dry_run=False messages=0 raw_blobs=1 raw_bytes=15 attachment_blobs=0 " in line
