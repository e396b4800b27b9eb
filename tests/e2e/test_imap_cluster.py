"""Two server processes on one PostgreSQL database (SQLite serves one process): an IDLE
session on one sees, within a second, what the other commits (SMTP delivery, IMAP
STORE/EXPUNGE/APPEND, an API flag change), through LISTEN/NOTIFY (``store/notify.py``), also
after its listen connection is killed. Every wait reads the protocol or the server's log;
none sleeps."""

from __future__ import annotations

import asyncio
import queue
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest

from mailboxkit.store.accounts import create_account, create_api_key, create_inbox
from mailboxkit.store.db import Database
from mailboxkit.store.notify import APPLICATION_NAME

from harness import ImapLine, free_port, serve_env

MESSAGE = b"From: a@example.test\r\nSubject: appended\r\n\r\nbody\r\n"
PUSH_DEADLINE = 1.0
"""Seconds from a commit in one process to the untagged response in the other."""


@dataclass
class Node:
    """One ``mailboxkit serve`` process and its ports; its log lines go to ``log``."""

    proc: subprocess.Popen[str]
    env: dict[str, str]
    log: queue.Queue[str]

    @property
    def smtp_port(self) -> int:
        return int(self.env["MAILBOXKIT_SMTP_PORT"])

    @property
    def imap_port(self) -> int:
        return int(self.env["MAILBOXKIT_IMAP_PORT"])

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MAILBOXKIT_HTTP_PORT']}"

    def wait_log(self, text: str, timeout: float = 30) -> None:
        """Read the server's log until a line contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.log.get(timeout=max(0.0, deadline - time.monotonic()))
            if text in line:
                return
            if not line:
                raise EOFError(f"server exited before logging {text!r}")


def node_env(tmp_path: Path, url: str, name: str) -> dict[str, str]:
    return serve_env(
        tmp_path / name,
        url,
        blob_url=tmp_path / "blobs",  # shared, as S3 would be
        secret_key="cluster-test-" + "0" * 64,
        smtp_port=free_port(),
        http_port=free_port(),
        imap_port=free_port(),
        imap_auth_failure_delay=0,
        migrate_on_start=False,
    )


def start_node(env: dict[str, str]) -> Node:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailboxkit.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keeps the pipe from filling, and lets the test read the log
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # end of the log: the process exited

    threading.Thread(target=drain, daemon=True).start()
    node = Node(proc, env, lines)
    try:
        node.wait_log("event=started")
    except (queue.Empty, EOFError):
        stop_node(node)
        pytest.fail("server did not start")
    return node


def stop_node(node: Node) -> None:
    if node.proc.poll() is None:
        node.proc.terminate()
        try:
            node.proc.wait(30)
        except subprocess.TimeoutExpired:
            node.proc.kill()
    node.proc.wait()
    assert node.proc.stderr is not None
    node.proc.stderr.close()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_database: str
) -> Iterator[tuple[Node, Node]]:
    """Two processes for the module's tests; each test has an inbox of its own."""
    _truncate_all(postgres_database)
    tmp_path = tmp_path_factory.mktemp("cluster")
    url = postgres_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    nodes: list[Node] = []
    try:
        for name in ("a", "b"):
            nodes.append(start_node(node_env(tmp_path, url, name)))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            stop_node(node)


@dataclass
class Mailbox:
    address: str
    inbox_id: str
    key: str


@pytest.fixture
def inbox(cluster: tuple[Node, Node], request: pytest.FixtureRequest) -> Mailbox:
    address = f"{request.node.name.removeprefix('test_')[:40]}@example.test"

    async def create() -> Mailbox:
        db = Database.open(cluster[0].env["MAILBOXKIT_DATABASE_URL"])
        try:
            async with db.write() as conn:
                now = datetime.now(UTC)
                account = await create_account(conn, name=address, owner_email=None, now=now)
                found = await create_inbox(conn, account_id=account, address=address, now=now)
                key = await create_api_key(conn, account_id=account, now=now)
        finally:
            await db.close()
        return Mailbox(address, found.id, key.secret)

    return asyncio.run(create())


def connect(node: Node, inbox: Mailbox, mailbox: str | None = "INBOX") -> ImapLine:
    line = ImapLine(node.imap_port, timeout=10)
    line.read()
    assert line.command("l", f"LOGIN {inbox.address} {inbox.key}")[-1].startswith(b"l OK")
    if mailbox is not None:
        line.command("s", f"SELECT {mailbox}")
    return line


def idle(conn: ImapLine) -> None:
    conn.send(b"i IDLE\r\n")
    assert conn.read() == b"+ idling\r\n"


def done(conn: ImapLine) -> None:
    conn.send(b"DONE\r\n")
    assert conn.read() == b"i OK IDLE terminated\r\n"


def deliver(node: Node, inbox: Mailbox, subject: str = "Pushed") -> None:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = inbox.address
    message["Subject"] = subject
    message.set_content("Hi.\n")
    with smtplib.SMTP("127.0.0.1", node.smtp_port) as smtp:
        smtp.send_message(message)  # answered 250 after the commit


def pushed(conn: ImapLine, since: float) -> bytes:
    """The next untagged response, which must arrive within the deadline."""
    line = conn.read()
    assert time.monotonic() - since < PUSH_DEADLINE, line
    return line


def test_delivery_on_one_process_is_pushed_by_the_other(
    cluster: tuple[Node, Node], inbox: Mailbox
) -> None:
    a, b = cluster
    watcher = connect(a, inbox)
    idle(watcher)
    deliver(b, inbox)
    assert pushed(watcher, time.monotonic()) == b"* 1 EXISTS\r\n"
    deliver(b, inbox, "Second")
    assert pushed(watcher, time.monotonic()) == b"* 2 EXISTS\r\n"
    done(watcher)
    # The message delivered by B is served whole by A (shared database and blob store).
    lines = watcher.command("f", "FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: Second" in b"".join(lines)
    watcher.close()


def test_imap_changes_on_one_process_are_pushed_by_the_other(
    cluster: tuple[Node, Node], inbox: Mailbox
) -> None:
    a, b = cluster
    other = connect(b, inbox)
    watcher = connect(a, inbox)
    idle(watcher)
    other.send(f"o1 APPEND INBOX {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE + b"\r\n")
    other.until_tagged("o1")
    assert pushed(watcher, time.monotonic()) == b"* 1 EXISTS\r\n"
    other.command("o2", "NOOP")
    other.command("o3", "STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert pushed(watcher, time.monotonic()) == b"* 1 FETCH (FLAGS (\\Flagged))\r\n"
    other.command("o4", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert pushed(watcher, time.monotonic()) == b"* 1 FETCH (FLAGS (\\Flagged \\Deleted))\r\n"
    other.command("o5", "EXPUNGE")
    assert pushed(watcher, time.monotonic()) == b"* 1 EXPUNGE\r\n"
    done(watcher)
    watcher.close()
    other.close()


def test_api_flag_change_on_one_process_is_pushed_by_the_other(
    cluster: tuple[Node, Node], inbox: Mailbox
) -> None:
    a, b = cluster
    deliver(b, inbox)
    watcher = connect(a, inbox)
    idle(watcher)
    api = httpx.Client(base_url=b.http_url, headers={"authorization": f"Bearer {inbox.key}"})
    base = f"/api/v1/inboxes/{inbox.inbox_id}/messages"
    [message] = api.get(base).json()["messages"]
    response = api.patch(f"{base}/{message['message_id']}", json={"read": True})
    assert response.status_code == 200, response.text
    assert pushed(watcher, time.monotonic()) == b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    done(watcher)
    api.close()
    watcher.close()


def _truncate_all(url: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version'"
            )
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(run())


def terminate_listeners(url: str) -> int:
    """Kill every notice connection, as a database failover or a proxy would."""

    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            killed = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
            return len(killed)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_notices_survive_a_killed_listen_connection(
    cluster: tuple[Node, Node], inbox: Mailbox, postgres_database: str
) -> None:
    a, b = cluster
    watcher = connect(a, inbox)
    idle(watcher)
    assert terminate_listeners(postgres_database) == 2
    # Delivered while A may not be listening yet: A rings every session once it is back.
    deliver(b, inbox)
    assert watcher.read() == b"* 1 EXISTS\r\n"
    a.wait_log("event=change_notify_lost")
    a.wait_log("event=change_notify_listening")
    b.wait_log("event=change_notify_listening")
    deliver(b, inbox, "After")
    assert pushed(watcher, time.monotonic()) == b"* 2 EXISTS\r\n"
    done(watcher)
    watcher.close()
