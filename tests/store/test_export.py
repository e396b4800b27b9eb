"""Account export (store/export.py) on SQLite and PostgreSQL, against the running server: each
Maildir file is the message IMAP serves, byte for byte, named with its flags; messages.jsonl and
account.json describe the same; another account's mail and every secret stay out; a missing
blob is listed and the export goes on; a pipe is as good an output as a file; a failed export
does not look whole."""

from __future__ import annotations

import email.policy
import gc
import hashlib
import imaplib
import io
import json
import mailbox
import os
import re
import smtplib
import threading
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from mailboxkit.dns.dkimkeys import ensure_keys
from mailboxkit.store import export as export_module
from mailboxkit.store import models as m
from mailboxkit.store import suppressions
from mailboxkit.store.accounts import Inbox, create_account, create_inbox
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.db import Database
from mailboxkit.store.domains import create_domain
from mailboxkit.store.entries import SystemFlag
from mailboxkit.store.export import (
    ExportSummary,
    KeywordLetters,
    export_account,
    folder_path,
    maildir_flags,
)
from mailboxkit.store.ids import new_id
from mailboxkit.store.localblobs import LocalBlobStore
from mailboxkit.store.senderrules import RuleAction, create_rule
from mailboxkit.store.webhooks import create_webhook, update_webhook

from harness import ServerThread

ALICE = "alice@example.test"
BOB = "bob@example.test"
OWN_DOMAIN = "alice-corp.test"
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
PDF = b"%PDF-1.4 not really a report\n" * 40
EIGHT_BIT = "na\u00efve r\u00e9sum\u00e9 \u2014 caf\u00e9\r\n".encode()
BOB_MARKER = "bob-only-subject-7f3a"
WEBHOOK_SECRET = "whsec_" + "s3cr3t" * 6
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$not-a-real-hash-but-secret"
MAILDIR_LETTER = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
EXPECTED_PATHS = {
    "INBOX": "INBOX",
    "Archive": "Archive",
    "Work": "Work",
    "Work/cur": "Work/%63ur",
    "..": "%2E%2E",
    "../escape": "%2E%2E/escape",
}


def mail(subject: str, to: str, *, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{new_id()}@remote.test>"
    msg.set_content(f"{subject}\n")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def deliver(server: ServerThread, raw: bytes, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
        smtp.sendmail("sender@remote.test", [to], raw, mail_options=["BODY=8BITMIME"])


def export(server: ServerThread, account_id: str, out: Any) -> ExportSummary | None:
    result: ExportSummary | None = server.call(
        export_account(server.app.db, server.app.blobs, account_id, out, now=NOW)
    )
    return result


def ok(answer: tuple[str, Any]) -> Any:
    assert answer[0] == "OK", answer
    return answer[1]


def mailbox_contents(client: imaplib.IMAP4, folder: str) -> dict[int, tuple[set[str], bytes]]:
    """UID -> (flags, whole message) of every message in ``folder``, as IMAP serves them."""
    [count] = ok(client.select(f'"{folder}"', readonly=True))
    if count == b"0":
        return {}
    found = {}
    for item in ok(client.fetch("1:*", "(UID FLAGS BODY.PEEK[])")):
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0])[1])  # type: ignore[index]
            flags = {f.decode() for f in imaplib.ParseFlags(item[0])} - {"\\Recent"}
            found[uid] = (flags, item[1])
    return found


@dataclass(frozen=True)
class Populated:
    alice: Inbox
    bob: Inbox
    imap_secret: str
    subjects: tuple[str, ...]


def populate(server: ServerThread) -> Populated:
    """Alice's mail in five folders with flags, her account's settings; Bob's one message."""
    alice = server.create_inbox(ALICE)
    bob = server.create_inbox(BOB)
    deliver(server, mail("plain one", ALICE), ALICE)
    deliver(server, mail("with attachment", ALICE, attachment=PDF), ALICE)
    eight_bit = (
        b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: eight bit\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ) + EIGHT_BIT
    deliver(server, eight_bit, ALICE)
    deliver(server, mail(BOB_MARKER, BOB), BOB)
    secret = server.create_key(alice.account_id)
    with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10) as client:
        ok(client.login(ALICE, secret))
        for folder in ("Work/cur", "../escape"):
            ok(client.create(f'"{folder}"'))
        ok(client.select("INBOX"))
        ok(client.store("1", "+FLAGS", "(\\Seen \\Flagged)"))
        ok(client.store("2", "+FLAGS", "(\\Answered $Label1)"))
        ok(client.copy("1", '"Work/cur"'))
        ok(client.copy("2", "Archive"))
        ok(client.copy("3", '"../escape"'))
        ok(client.store("3", "+FLAGS", "(\\Deleted)"))
        ok(client.select('"../escape"'))
        ok(client.store("1", "+FLAGS", "(\\Draft \\Seen)"))

    async def settings() -> None:
        db, account = server.app.db, alice.account_id
        async with db.write() as conn:
            hook = await create_webhook(
                conn,
                account_id=account,
                url="https://hooks.alice.test/mail",
                events=["message.received"],
                inbox_ids=None,
                description="agent hook",
                secret=WEBHOOK_SECRET,
                now=NOW,
            )
            await update_webhook(conn, account, hook.id, {"enabled": False}, now=NOW)
            await create_rule(
                conn, account, action=RuleAction.BLOCK, sender="spam.test", inbox_id=None, now=NOW
            )
            await suppressions.add(
                conn,
                account,
                [
                    suppressions.NewSuppression(
                        "gone@remote.test", suppressions.SuppressionReason.MANUAL
                    )
                ],
                now=NOW,
            )
            await create_domain(conn, account, OWN_DOMAIN, now=NOW)
            await conn.execute(
                update(m.accounts)
                .where(m.accounts.c.id == account)
                .values(password_hash=PASSWORD_HASH)
            )
            outbound_id = new_id()
            await conn.execute(
                insert(m.outbound_messages).values(
                    id=outbound_id,
                    account_id=account,
                    inbox_id=alice.id,
                    raw_key="msg/2026/11/02/sent.eml",
                    envelope_from=ALICE,
                    created_at=NOW,
                    expires_at=NOW + timedelta(days=5),
                )
            )
            await conn.execute(
                insert(m.outbound_recipients).values(
                    outbound_id=outbound_id,
                    recipient="nobody@remote.test",
                    domain="remote.test",
                    status="bounced",
                    attempts=1,
                    next_attempt_at=NOW,
                    last_reply="550 5.1.1 no such user",
                    updated_at=NOW,
                )
            )
        await ensure_keys(db, OWN_DOMAIN, now=NOW, create_domain=False)

    server.call(settings())
    subjects = ("plain one", "with attachment", "eight bit")
    return Populated(alice, bob, secret, subjects)


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        return {info.filename: zf.read(info) for info in zf.infolist()}


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_export_holds_the_mail_imap_serves_and_no_secret(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = populate(server)
    out = io.BytesIO()
    summary = export(server, made.alice.account_id, out)
    archive = out.getvalue()
    files = members(archive)
    assert summary is not None
    assert (summary.inboxes, summary.folders, summary.messages) == (1, 10, 6)
    assert (summary.missing_blobs, summary.outbound, summary.archive_bytes) == (0, 1, len(archive))

    # Every message in every folder, as IMAP serves it, is one Maildir file, flags in its name.
    with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10) as client:
        ok(client.login(ALICE, made.imap_secret))
        served = {
            (f, uid): got
            for f in EXPECTED_PATHS
            for uid, got in mailbox_contents(client, f).items()
        }
    lines = jsonl(files[f"inboxes/{ALICE}/messages.jsonl"])
    listed = {(line["folder"], line["uid"]): line for line in lines}
    assert set(listed) == set(served) and len(lines) == 6
    for (folder, uid), (flags, body) in served.items():
        line = listed[folder, uid]
        path = line["file"]
        assert path.startswith(f"inboxes/{ALICE}/{EXPECTED_PATHS[folder]}/cur/")
        assert files[path] == body
        letters = "".join(sorted(MAILDIR_LETTER[f] for f in flags if f in MAILDIR_LETTER))
        seconds = int(datetime.fromisoformat(line["internal_date"]).timestamp())
        assert path.rpartition("/")[2].startswith(f"{seconds}.")
        folder_dir = path.rpartition("/cur/")[0]
        listing = files.get(f"{folder_dir}/dovecot-keywords", b"").decode().splitlines()
        lettered = {
            k: "abcdefghijklmnopqrstuvwxyz"[int(n)] for n, k in (x.split(" ") for x in listing)
        }
        letters += "".join(sorted(lettered[k] for k in line["keywords"]))
        assert path.endswith(f".mailboxkit:2,{letters}")
        assert set(line["flags"]) | set(line["keywords"]) == flags
        assert line["size"] == len(body)
    assert listed["INBOX", 1]["file"].endswith(":2,FS")
    assert listed["INBOX", 2]["keywords"] == ["$Label1"]
    assert listed["INBOX", 2]["file"].endswith(":2,Ra")  # \Answered, then the keyword
    assert files[f"inboxes/{ALICE}/INBOX/dovecot-keywords"] == b"0 $Label1\n"
    assert listed["INBOX", 3]["file"].endswith(":2,T")
    assert listed["../escape", 1]["file"].endswith(":2,DS")
    assert EIGHT_BIT in files[listed["../escape", 1]["file"]]
    [attachment] = listed["Archive", 1]["attachments"]
    assert attachment["filename"] == "report.pdf" and attachment["size"] == len(PDF)
    assert attachment["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert {line["subject"] for line in lines} == set(made.subjects)
    assert summary.message_bytes == sum(len(body) for _, body in served.values())

    # account.json describes the same folders, and the account's settings.
    manifest = json.loads(files["account.json"])
    assert manifest["format"] == "mailboxkit-export/1"
    assert manifest["exported_at"] == "2026-11-02T12:00:00+00:00"
    assert manifest["account"]["id"] == made.alice.account_id
    [inbox] = manifest["inboxes"]
    assert inbox["email"] == ALICE and inbox["id"] == made.alice.id
    counts = {f["name"]: f["messages"] for f in inbox["folders"]}
    assert counts == {
        "INBOX": 3,
        "Sent": 0,
        "Drafts": 0,
        "Trash": 0,
        "Junk": 0,
        "Archive": 1,
        "Work": 0,
        "Work/cur": 1,
        "..": 0,
        "../escape": 1,
    }
    for folder in inbox["folders"]:
        assert folder["path"] == f"inboxes/{ALICE}/{folder_path(folder['name'])}/"
        for part in ("", "cur/", "new/", "tmp/"):
            assert folder["path"] + part in files
    [webhook] = manifest["webhooks"]
    assert webhook["url"] == "https://hooks.alice.test/mail" and webhook["enabled"] is False
    assert [k["prefix"] for k in manifest["api_keys"]] == [made.imap_secret[:12]]
    [domain] = manifest["domains"]
    assert domain["name"] == OWN_DOMAIN and len(domain["dkim_keys"]) == 2
    assert all(key["public_txt"].startswith("v=DKIM1") for key in domain["dkim_keys"])
    assert [r["sender"] for r in manifest["sender_rules"]] == ["spam.test"]
    assert [s["address"] for s in manifest["suppressions"]] == ["gone@remote.test"]
    assert manifest["missing_blobs"] == []
    [sent] = jsonl(files["outbound.jsonl"])
    [recipient] = sent["recipients"]
    assert recipient["status"] == "bounced" and recipient["last_reply"].startswith("550 5.1.1")

    # Nothing of Bob's, no secret, in the archive or in anything it holds; no unsafe path.
    everything = archive + b"".join(files.values()) + "".join(files).encode()
    assert BOB_MARKER.encode() not in everything and BOB.encode() not in everything
    hashes = server.query(select(m.api_keys.c.key_hash))
    pems = server.query(select(m.dkim_keys.c.private_key))
    secrets = [made.imap_secret, WEBHOOK_SECRET, PASSWORD_HASH, *(h[0] for h in hashes)]
    secrets += [line for pem in pems for line in pem[0].splitlines() if "PRIVATE KEY" not in line]
    for secret in secrets:
        assert secret.encode() not in everything, secret
    for name in files:
        assert not name.startswith("/") and "\\" not in name and "\x00" not in name
        assert ".." not in name.split("/")

    # The standard library's Maildir reader takes an extracted folder as it is.
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        zf.extractall(tmp_path / "extracted")
    folder = tmp_path / "extracted" / "inboxes" / ALICE / "%2E%2E" / "escape"
    maildir = mailbox.Maildir(folder, factory=None, create=False)
    [key] = maildir.keys()
    assert maildir[key].get_flags() == "DS" and maildir.get_bytes(key) == served["../escape", 1][1]

    # An unseekable output (a pipe, read by another thread) gets the same archive, also when
    # every folder and the delivery log are read a row at a time.
    monkeypatch.setattr(export_module, "PAGE", 1)
    assert members(through_pipe(server, made.alice.account_id)) == files


def through_pipe(server: ServerThread, account_id: str) -> bytes:
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            while data := pipe.read(65536):
                chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "wb") as pipe:
        assert not pipe.seekable()
        assert export(server, account_id, pipe) is not None
    reader.join(10)
    return b"".join(chunks)


def test_a_missing_blob_is_listed_and_the_export_goes_on(server: ServerThread) -> None:
    alice = server.create_inbox(ALICE)
    deliver(server, mail("kept", ALICE), ALICE)
    deliver(server, mail("lost", ALICE), ALICE)
    msg = m.messages.c
    [(lost_id, lost_key)] = server.query(select(msg.id, msg.raw_key).where(msg.subject == "lost"))
    server.call(server.app.blobs.delete(lost_key))

    out = io.BytesIO()
    summary = export(server, alice.account_id, out)
    assert summary is not None and summary.messages == 1 and summary.missing_blobs == 1
    files = members(out.getvalue())
    manifest = json.loads(files["account.json"])
    assert manifest["missing_blobs"] == [
        {"key": lost_key, "message_id": lost_id, "inbox": ALICE, "folder": "INBOX", "uid": 2}
    ]
    lines = {line["subject"]: line for line in jsonl(files[f"inboxes/{ALICE}/messages.jsonl"])}
    assert lines["lost"]["file"] is None
    assert b"Subject: kept" in files[lines["kept"]["file"]]
    assert [f["messages"] for f in manifest["inboxes"][0]["folders"] if f["name"] == "INBOX"] == [2]


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(
        tmp_path / "blobs", signing_key=b"k" * 32, public_base_url="http://127.0.0.1"
    )
    yield store
    await store.close()


async def test_an_unknown_account_writes_nothing(db: Database, blobs: BlobStore) -> None:
    out = io.BytesIO()
    assert await export_account(db, blobs, new_id(), out, now=NOW) is None
    assert out.getvalue() == b""


async def test_an_address_is_one_safe_directory(db: Database, blobs: BlobStore) -> None:
    async with db.write() as conn:
        account = await create_account(conn, name="odd", owner_email=None, now=NOW)
        await create_inbox(conn, account_id=account, address="../x/y@example.test", now=NOW)
    out = io.BytesIO()
    assert await export_account(db, blobs, account, out, now=NOW) is not None
    names = set(members(out.getvalue()))
    assert "inboxes/..%2Fx%2Fy@example.test/INBOX/cur/" in names
    assert "inboxes/..%2Fx%2Fy@example.test/messages.jsonl" in names
    assert all(".." not in name.split("/") for name in names)


class BreaksAfter:
    """An output that fails once ``limit`` bytes were written (a client that went away)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        if len(self.data) + len(data) > self.limit:
            raise BrokenPipeError("gone")
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


async def test_a_failed_export_is_not_a_whole_zip(
    db: Database, blobs: BlobStore, inbox: Inbox
) -> None:
    whole = io.BytesIO()
    assert await export_account(db, blobs, inbox.account_id, whole, now=NOW) is not None
    assert "inboxes/bot@example.test/INBOX/cur/" in members(whole.getvalue())
    out = BreaksAfter(len(whole.getvalue()) // 2)
    with pytest.raises(BrokenPipeError):
        await export_account(db, blobs, inbox.account_id, out, now=NOW)
    written = bytes(out.data)
    gc.collect()  # the abandoned ZipFile closes itself: it must not write its directory now
    assert bytes(out.data) == written
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(written))


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("INBOX", "INBOX"),
        ("Work/Projects 2026", "Work/Projects 2026"),
        ("R\u00e9sum\u00e9s/\u65e5\u672c", "R\u00e9sum\u00e9s/\u65e5\u672c"),
        ("..", "%2E%2E"),
        ("../../etc", "%2E%2E/%2E%2E/etc"),
        ("a/./b", "a/%2E/b"),
        ("/abs", "%/abs"),
        ("a//b", "a/%/b"),
        ("", "%"),
        ("a\\..\\b", "a%5C..%5Cb"),
        ("100%", "100%25"),
        ("nul\x00tab\tend", "nul%00tab%09end"),
        ("cur", "cur"),
        ("Work/cur", "Work/%63ur"),
        ("Work/NEW/tmp", "Work/%4EEW/%74mp"),
        ("messages.jsonl", "%6Dessages.jsonl"),
        ("Work/messages.jsonl", "Work/messages.jsonl"),
    ],
)
def test_folder_paths_are_safe_and_readable(name: str, path: str) -> None:
    assert folder_path(name) == path


def test_maildir_flags_are_letters_in_ascii_order() -> None:
    assert maildir_flags(SystemFlag) == "DFRST"
    assert maildir_flags({SystemFlag.SEEN, SystemFlag.FLAGGED}) == "FS"
    assert maildir_flags(()) == ""


def test_keywords_are_dovecot_letters_up_to_26_a_folder() -> None:
    letters = KeywordLetters()
    assert letters.of(["$Forwarded", "work"]) == "ab"
    assert letters.of(["work"]) == "b" and letters.of([]) == ""
    many = [f"k{n}" for n in range(30)]
    assert letters.of(many) == "cdefghijklmnopqrstuvwxyz"  # 24 left; the rest: jsonl only
    listing = letters.listing().decode().splitlines()
    assert listing[:3] == ["0 $Forwarded", "1 work", "2 k0"] and listing[-1] == "25 k23"
    assert KeywordLetters().listing() == b""
