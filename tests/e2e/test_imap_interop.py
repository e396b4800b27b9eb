"""Real IMAP sync clients against the running server: mbsync (isync) and OfflineIMAP.

Each does a full sync of every folder over verified TLS (a trustme CA), an incremental sync
after new mail arrives by SMTP and a flag changes on the server, then pushes local changes
back (a message marked seen and flagged, a deletion, a new draft, a new folder). The server's
state is then read through the HTTP API and the store, and it must have logged no warning.
The clients run as subprocesses with timeouts; what they got is read from their Maildir
output. The Debian packages are in ``.ci/packages``.
"""

from __future__ import annotations

import imaplib
import logging
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import trustme
from sqlalchemy import select

from mailboxkit.store import models as m

from harness import ServerThread, free_port, server_settings

ADDRESS = "bot@example.test"
FOLDERS = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
SYNC_TIMEOUT = 120


@dataclass(frozen=True)
class Account:
    server: ServerThread
    key: str
    inbox_id: str
    ca_file: Path


@dataclass(frozen=True)
class Mail:
    """One message file of a Maildir: its path, Maildir flags and subject."""

    path: Path
    flags: str
    subject: str


class SyncClient(Protocol):
    root: Path
    added_headers: tuple[bytes, ...]
    """Header fields the client adds to the messages it stores."""

    def sync(self) -> None: ...


@pytest.fixture
def account(tmp_path: Path, database_url: str) -> Iterator[Account]:
    ca = trustme.CA()
    # OfflineIMAP (imaplib2) checks the certificate's common name, not only its SANs.
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    settings = server_settings(
        tmp_path / "data",
        database_url,
        imap_port=free_port(),
        imaps_port=free_port(),
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        imap_auth_failure_delay=0,
    )
    server = ServerThread(settings)
    server.start()
    try:
        inbox = server.create_inbox(ADDRESS)
        yield Account(server, server.create_key(inbox.account_id), inbox.id, ca_file)
    finally:
        server.stop()


# -- the clients ------------------------------------------------------------------------------


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=SYNC_TIMEOUT, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


class Mbsync:
    """isync's mbsync: one channel of every folder, changes and expunges both ways."""

    added_headers = (b"X-TUID:",)  # mbsync's transaction id, in every message it stores

    def __init__(self, account: Account, work: Path, *, starttls: bool) -> None:
        self.work, self.root = work, work / "mail"
        self.root.mkdir(parents=True)
        ports = account.server.app.ports
        port, tls = (ports["imap"], "STARTTLS") if starttls else (ports["imaps"], "IMAPS")
        self.config = work / "mbsyncrc"
        self.config.write_text(
            f"IMAPAccount mbk\nHost localhost\nPort {port}\nUser {ADDRESS}\n"
            f'Pass "{account.key}"\nSSLType {tls}\nCertificateFile {account.ca_file}\n\n'
            "IMAPStore remote\nAccount mbk\n\n"
            f"MaildirStore local\nPath {self.root}/\nInbox {self.root}/INBOX\n"
            "SubFolders Verbatim\n\n"
            "Channel mbk\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
            "Expunge Both\nSyncState *\nSync All\n"
        )

    def sync(self) -> None:
        run(["mbsync", "-c", str(self.config), "-a"], self.work)


class OfflineImap:
    """OfflineIMAP 8 (offlineimap3): one-shot runs, Maildir on the local side."""

    added_headers = ()

    def __init__(self, account: Account, work: Path) -> None:
        self.work, self.root = work, work / "mail"
        self.root.mkdir(parents=True)
        (work / "meta").mkdir()
        self.config = work / "offlineimaprc"
        self.config.write_text(
            f"[general]\naccounts = mbk\nmetadata = {work / 'meta'}\n\n"
            "[Account mbk]\nlocalrepository = local\nremoterepository = remote\n\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {self.root}\n\n"
            "[Repository remote]\ntype = IMAP\nremotehost = localhost\n"
            f"remoteport = {account.server.app.ports['imaps']}\nremoteuser = {ADDRESS}\n"
            f"remotepass = {account.key}\nssl = yes\nsslcacertfile = {account.ca_file}\n"
        )

    def sync(self) -> None:
        output = run(["offlineimap", "-c", str(self.config), "-o", "-u", "basic"], self.work)
        assert "ERROR" not in output, output


# -- Maildir and server helpers -------------------------------------------------------------


def maildir(root: Path) -> dict[str, list[Mail]]:
    """Every folder under ``root`` and its messages (cur and new)."""
    folders: dict[str, list[Mail]] = {}
    for cur in sorted(root.rglob("cur")):
        folder = cur.parent
        mails = []
        for path in sorted([*cur.iterdir(), *(folder / "new").iterdir()]):
            _, _, info = path.name.partition(":2,")
            with path.open("rb") as f:
                subject = str(BytesHeaderParser().parse(f)["Subject"])
            mails.append(Mail(path, info, subject))
        folders[str(folder.relative_to(root))] = mails
    return folders


def by_subject(mails: list[Mail]) -> dict[str, Mail]:
    return {mail.subject: mail for mail in mails}


def content(client: SyncClient, mail: Mail) -> bytes:
    """The message file without the header fields the client added."""
    header, _, body = mail.path.read_bytes().partition(b"\n\n")
    lines = [line for line in header.split(b"\n") if not line.startswith(client.added_headers)]
    return b"\n".join(lines) + b"\n\n" + body


def set_flags(mail: Mail, flags: str) -> None:
    """Change a message's flags as a mail reader does: move it to cur/ with a new info."""
    name = mail.path.name.partition(":2,")[0] + ":2," + "".join(sorted(flags))
    mail.path.rename(mail.path.parent.parent / "cur" / name)


def deliver(account: Account, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = ADDRESS
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@sender.test>"
    message.set_content(f"This is {subject}.\n")
    with smtplib.SMTP("127.0.0.1", account.server.smtp_port) as smtp:
        smtp.send_message(message)


def imap(account: Account) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", account.server.imap_port)
    client.login(ADDRESS, account.key)
    return client


def server_messages(account: Account) -> dict[str, dict[str, object]]:
    """The inbox's messages as the HTTP API lists them, by subject."""
    headers = {"authorization": f"Bearer {account.key}"}
    with httpx.Client(base_url=account.server.http_url, headers=headers) as api:
        response = api.get(f"/api/v1/inboxes/{account.inbox_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {item["subject"]: item for item in response.json()["messages"]}


def server_entries(account: Account) -> dict[tuple[str, str], tuple[bool, ...]]:
    """(folder, subject) -> (seen, flagged, deleted, draft), from the store."""
    rows = account.server.query(
        select(
            m.folders.c.name,
            m.messages.c.subject,
            m.entries.c.seen,
            m.entries.c.flagged,
            m.entries.c.deleted,
            m.entries.c.draft,
        )
        .join(m.entries, m.entries.c.folder_id == m.folders.c.id)
        .join(m.messages, m.messages.c.id == m.entries.c.message_id)
        .where(m.folders.c.inbox_id == account.inbox_id)
    )
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}


def raw(account: Account, subject: str) -> bytes:
    """The message as stored, with the LF line ends a Maildir keeps."""
    [(key,)] = account.server.query(
        select(m.messages.c.raw_key).where(m.messages.c.subject == subject)
    )
    return account.server.blob(key).replace(b"\r\n", b"\n")


# -- the scenario -----------------------------------------------------------------------------


def seed(account: Account) -> None:
    """Three messages in INBOX (the first one read), one in each other folder."""
    for n in range(3):
        deliver(account, f"inbox {n}")
    client = imap(account)
    for folder in sorted(FOLDERS - {"INBOX"}):
        text = f"From: {ADDRESS}\r\nSubject: in {folder}\r\n\r\nKept in {folder}.\r\n"
        client.append(folder, None, None, text.encode())
    client.select("INBOX")
    client.store("1", "+FLAGS", "(\\Seen)")
    client.logout()


def full_sync_gets_every_folder(client: SyncClient, account: Account) -> dict[str, list[Mail]]:
    client.sync()
    got = maildir(client.root)
    assert set(got) == FOLDERS
    inbox = by_subject(got["INBOX"])
    assert set(inbox) == {"inbox 0", "inbox 1", "inbox 2"}
    for subject, mail in inbox.items():
        assert content(client, mail) == raw(account, subject)  # byte-exact but for line ends
    assert inbox["inbox 0"].flags == "S"
    assert inbox["inbox 1"].flags == ""
    for folder in FOLDERS - {"INBOX"}:
        assert [mail.subject for mail in got[folder]] == [f"in {folder}"]
    return got


def incremental_sync_gets_what_changed(
    client: SyncClient, account: Account, before: dict[str, list[Mail]]
) -> None:
    deliver(account, "inbox 3")
    deliver(account, "inbox 4")
    server = imap(account)
    server.select("INBOX")
    server.store("3", "+FLAGS", "(\\Flagged)")  # inbox 2
    server.logout()
    client.sync()
    inbox = by_subject(maildir(client.root)["INBOX"])
    assert set(inbox) == {f"inbox {n}" for n in range(5)}
    assert content(client, inbox["inbox 4"]) == raw(account, "inbox 4")
    assert inbox["inbox 2"].flags == "F"
    kept = by_subject(before["INBOX"])
    assert inbox["inbox 0"].path == kept["inbox 0"].path  # not fetched again


def local_changes_reach_the_server(client: SyncClient, account: Account) -> None:
    got = maildir(client.root)
    inbox = by_subject(got["INBOX"])
    set_flags(inbox["inbox 1"], "FS")
    inbox["inbox 3"].path.unlink()
    draft = f"From: {ADDRESS}\r\nSubject: local draft\r\n\r\nWritten offline.\r\n"
    (client.root / "Drafts" / "cur" / "1700000000.M1P1.localhost:2,DS").write_text(draft)
    projects = client.root / "Projects"
    for part in ("cur", "new", "tmp"):
        (projects / part).mkdir(parents=True)
    note = f"From: {ADDRESS}\r\nSubject: local folder\r\n\r\nFiled offline.\r\n"
    (projects / "new" / "1700000001.M2P1.localhost").write_text(note)
    client.sync()

    listed = server_messages(account)
    assert "inbox 3" not in listed  # deleted and expunged
    assert listed["inbox 1"]["read"] is True
    assert listed["inbox 0"]["read"] is True
    assert listed["inbox 2"]["read"] is False
    entries = server_entries(account)
    assert ("INBOX", "inbox 3") not in entries
    assert entries[("INBOX", "inbox 1")] == (True, True, False, False)
    assert entries[("INBOX", "inbox 2")] == (False, True, False, False)
    assert entries[("Drafts", "local draft")] == (True, False, False, True)
    assert entries[("Projects", "local folder")] == (False, False, False, False)
    # And a second run has nothing left to do: the same files, the same server state.
    client.sync()
    again = maildir(client.root)
    assert {mail.subject for mail in again["INBOX"]} == {"inbox 0", "inbox 1", "inbox 2", "inbox 4"}
    assert server_entries(account) == entries


def scenario(client: SyncClient, account: Account, caplog: pytest.LogCaptureFixture) -> None:
    seed(account)
    before = full_sync_gets_every_folder(client, account)
    incremental_sync_gets_what_changed(client, account, before)
    local_changes_reach_the_server(client, account)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync is not installed")
@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
def test_mbsync(
    account: Account, tmp_path: Path, starttls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    scenario(Mbsync(account, tmp_path / "mbsync", starttls=starttls), account, caplog)


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 is not installed")
def test_offlineimap(account: Account, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scenario(OfflineImap(account, tmp_path / "offlineimap"), account, caplog)
