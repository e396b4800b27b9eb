"""Nothing acknowledged is lost, for the other two ways mail gets in: IMAP APPEND and SMTP
submission, with the server SIGKILLed at random moments under load and restarted.

The server runs as a real ``mailboxkit serve`` process. IMAP sessions (aioimaplib) append
uniquely tagged messages to INBOX; submission sessions (aiosmtplib, STARTTLS and AUTH) send
tagged messages to a remote address (the smarthost is a closed port, so they stay queued).
Afterwards every APPEND answered OK is in INBOX exactly once, byte-exact, under the UID its
``APPENDUID`` named; every submission answered 250 has exactly one Sent copy and one queued
outbound message; and nothing unacknowledged was stored twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aioimaplib
import aiosmtplib
import pytest
from sqlalchemy import func, select

from e2e.test_durability import ServerProcess
from mailboxkit.store import models as m
from mailboxkit.store.db import Database
from mailboxkit.store.localblobs import LocalBlobStore

from harness import cli, free_port, serve_env

ADDRESS = "agent@example.test"
TARGET_ACKED = 600  # appends and submissions together
SESSIONS = 3  # of each kind
KILLS = 4
APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
TAG = re.compile(r"durable (([as])\d+n\d+)")
T = TypeVar("T")


def _message(tag: str) -> bytes:
    body = f"payload {tag} " + "y" * random.randrange(10, 3000)
    return (
        f"From: {ADDRESS}\r\nTo: someone@remote.test\r\nSubject: durable {tag}\r\n"
        f"Message-ID: <{tag}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


@dataclass
class Load:
    appended: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # tag -> (uid, bytes)
    submitted: dict[str, bytes] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def acked(self) -> int:
        return len(self.appended) + len(self.submitted)

    def count(self) -> None:
        self.progress.set()
        if self.acked >= TARGET_ACKED:
            self.done.set()


async def _appender(server: ServerProcess, port: int, key: str, worker: int, load: Load) -> None:
    n = 0
    while not load.done.is_set():
        await server.up.wait()
        lost = asyncio.Event()  # aioimaplib leaves a command waiting when the peer is gone
        client = aioimaplib.IMAP4(
            host="127.0.0.1", port=port, timeout=30, conn_lost_cb=lambda _, lost=lost: lost.set()
        )
        try:
            await _unless_lost(client.wait_hello_from_server(), lost)
            login = await _unless_lost(client.login(ADDRESS, key), lost)
            assert login.result == "OK", login
            while not load.done.is_set():
                tag = f"a{worker}n{n}"
                n += 1
                data = _message(tag)
                answer = await _unless_lost(client.append(data, mailbox="INBOX"), lost)
                assert answer.result == "OK", answer
                uid = APPENDUID.search(b" ".join(answer.lines))
                assert uid is not None, answer.lines
                load.appended[tag] = (int(uid.group(2)), data)
                load.count()
        except (ConnectionError, OSError):
            continue  # killed mid-session: unacknowledged, move on
        finally:
            if client.protocol is not None and client.protocol.transport is not None:
                client.protocol.transport.close()


async def _unless_lost(command: Awaitable[T], lost: asyncio.Event) -> T:
    """The command's answer; ConnectionResetError when the connection is lost first (a server
    that stays up must answer within a minute)."""
    answer = asyncio.ensure_future(command)
    closed = asyncio.ensure_future(lost.wait())
    await asyncio.wait({answer, closed}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if answer.done():
        return answer.result()
    answer.cancel()
    if lost.is_set():
        raise ConnectionResetError("the server went away")
    raise AssertionError("no answer from the server in 60 s")


async def _submitter(server: ServerProcess, port: int, key: str, worker: int, load: Load) -> None:
    n = 0
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's self-signed certificate
    while not load.done.is_set():
        await server.up.wait()
        try:
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, timeout=30, start_tls=True, tls_context=context
            ) as smtp:
                await smtp.login(ADDRESS, key)
                while not load.done.is_set():
                    tag = f"s{worker}n{n}"
                    n += 1
                    data = _message(tag)
                    errors, _ = await smtp.sendmail(ADDRESS, ["someone@remote.test"], data)
                    assert errors == {}
                    load.submitted[tag] = data
                    load.count()
        except (aiosmtplib.SMTPException, OSError):
            continue


@pytest.mark.slow
async def test_no_acknowledged_append_or_submission_lost_under_sigkill(
    tmp_path: Path, database_url: str
) -> None:
    imap_port, submission_port = free_port(), free_port()
    env = serve_env(
        tmp_path / "data",
        database_url,
        imap_port=imap_port,
        submission_port=submission_port,
        outbound_transport="smarthost",
        smarthost_host="127.0.0.1",
        smarthost_port=free_port(),  # nothing listens: every delivery attempt is deferred
        smarthost_tls="none",
    )
    created = cli(env, "inbox", "create", ADDRESS, "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["api_key"]
    server = ServerProcess(env)
    load = Load()
    kills = 0

    async def killer() -> None:
        nonlocal kills
        for target in sorted(random.sample(range(30, TARGET_ACKED - 50), KILLS)):
            while load.acked < target:
                await load.progress.wait()
                load.progress.clear()
            await server.kill()
            kills += 1
            await server.start()

    await server.start()
    try:
        workers = [
            *(_appender(server, imap_port, key, i, load) for i in range(SESSIONS)),
            *(_submitter(server, submission_port, key, i, load) for i in range(SESSIONS)),
        ]
        await asyncio.wait_for(asyncio.gather(killer(), *workers), timeout=600)
        assert await server.terminate() == 0
    finally:
        server.ensure_stopped()
    assert kills == KILLS

    stored = await _stored(database_url)
    blobs = LocalBlobStore(tmp_path / "data" / "blobs", signing_key=b"k" * 32, public_base_url="")
    twice = {tag: len(rows) for tag, rows in stored.items() if len(rows) > 1}
    assert twice == {}
    for tag, (uid, data) in load.appended.items():
        assert tag in stored, f"APPEND {tag} answered OK, not stored"
        [(folder, stored_uid, raw_key, queued)] = stored[tag]
        assert (folder, stored_uid, queued) == ("INBOX", uid, 0)
        assert await blobs.get(raw_key) == data  # APPEND keeps the bytes as given
    for tag in load.submitted:
        assert tag in stored, f"submission {tag} answered 250, no Sent copy"
        [(folder, _, _, queued)] = stored[tag]
        assert (folder, queued) == ("Sent", 1)
    assert load.appended and load.submitted
    assert load.acked >= TARGET_ACKED


async def _stored(database_url: str) -> dict[str, list[tuple[str, int, str, int]]]:
    """Each tagged message the store holds: its folder, UID, raw blob and how many outbound
    messages were queued with it as their Sent copy."""
    queued = (
        select(func.count())
        .select_from(m.outbound_messages)
        .where(m.outbound_messages.c.message_id == m.messages.c.id)
        .scalar_subquery()
    )
    query = (
        select(m.messages.c.subject, m.folders.c.name, m.entries.c.uid, m.messages.c.raw_key)
        .add_columns(queued.label("queued"))
        .select_from(
            m.entries.join(m.messages, m.messages.c.id == m.entries.c.message_id).join(
                m.folders, m.folders.c.id == m.entries.c.folder_id
            )
        )
    )
    db = Database.open(database_url)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(query)).all()
    finally:
        await db.close()
    found: dict[str, list[tuple[str, int, str, int]]] = {}
    for row in rows:
        tag = TAG.fullmatch(row.subject)
        assert tag is not None, row.subject
        found.setdefault(tag.group(1), []).append(
            (row.name, int(row.uid), row.raw_key, int(row.queued))
        )
    return found
