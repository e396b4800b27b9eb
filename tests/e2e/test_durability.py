"""Nothing acknowledged is lost: SIGKILL the server at random moments under SMTP load.

The server runs as a real ``mailboxkit serve`` process. Clients send uniquely tagged messages
over concurrent sessions; a killer task SIGKILLs the process several times and restarts it.
Afterwards every message that got a 250 must be in the store exactly once and byte-exact, and
no message may be stored twice.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import signal
import sys
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select

from mailboxkit.store import models as m
from mailboxkit.store.db import Database
from mailboxkit.store.localblobs import LocalBlobStore

from harness import cli, free_port, serve_env

TARGET_ACKED = 2000
SESSIONS = 10
KILLS = 5


class ServerProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.up = asyncio.Event()
        self.recent: collections.deque[str] = collections.deque(maxlen=200)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.up.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailboxkit.cli",
            "serve",
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        try:
            await asyncio.wait_for(self.up.wait(), 120)
        except TimeoutError:
            sys.stderr.write("".join(self.recent))
            raise

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            self.recent.append(line.decode(errors="replace"))
            if b"event=started" in line:
                self.up.set()
            if b"Traceback" in line or b" ERROR " in line:
                sys.stderr.write(line.decode(errors="replace"))

    async def kill(self) -> None:
        assert self.proc is not None
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        assert self._reader is not None
        await self._reader

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def terminate(self) -> int:
        assert self.proc is not None and self._reader is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await self._reader
        return code


def _message(tag: str) -> bytes:
    body = f"payload {tag} " + "x" * random.randrange(10, 3000)
    return (
        f"From: load@sender.test\r\nTo: sink@example.test\r\nSubject: load {tag}\r\n"
        f"Message-ID: <{tag}@sender.test>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.mark.slow
async def test_no_acknowledged_message_lost_under_sigkill(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    env = serve_env(tmp_path / "data", database_url, smtp_port=port)
    created = cli(env, "inbox", "create", "sink@example.test", "--json")
    assert created.returncode == 0, created.stderr
    server = ServerProcess(env)
    await server.start()
    try:
        acked: dict[str, bytes] = {}
        attempted = 0
        kills = 0
        done = asyncio.Event()
        progress = asyncio.Event()

        async def client(worker: int) -> None:
            nonlocal attempted
            n = 0
            while not done.is_set():
                await server.up.wait()
                try:
                    async with aiosmtplib.SMTP(
                        hostname="127.0.0.1", port=port, timeout=30, start_tls=False
                    ) as smtp:
                        while not done.is_set():
                            tag = f"w{worker}n{n}"
                            n += 1
                            data = _message(tag)
                            attempted += 1
                            errors, _ = await smtp.sendmail(
                                "load@sender.test", ["sink@example.test"], data
                            )
                            assert errors == {}
                            acked[tag] = data
                            progress.set()
                            if len(acked) >= TARGET_ACKED:
                                done.set()
                except (aiosmtplib.SMTPException, OSError):
                    continue  # killed mid-session: unacknowledged, move on

        async def killer() -> None:
            nonlocal kills
            # Random moments under load, spread over the run.
            for target in sorted(random.sample(range(50, TARGET_ACKED - 100), KILLS)):
                while len(acked) < target:
                    await progress.wait()
                    progress.clear()
                await server.kill()
                kills += 1
                await server.start()

        await asyncio.wait_for(
            asyncio.gather(killer(), *(client(i) for i in range(SESSIONS))), timeout=600
        )
        assert await server.terminate() == 0
        assert kills == KILLS
    finally:
        server.ensure_stopped()

    db = Database.open(database_url)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(m.messages.c.raw_key, m.messages.c.subject))).all()
    finally:
        await db.close()
    blobs = LocalBlobStore(tmp_path / "data" / "blobs", signing_key=b"k" * 32, public_base_url="")
    stored: dict[str, list[bytes]] = {}
    for row in rows:
        tag = re.fullmatch(r"load (w\d+n\d+)", row.subject)
        assert tag is not None
        stored.setdefault(tag.group(1), []).append(await blobs.get(row.raw_key))
    duplicates = {t: len(v) for t, v in stored.items() if len(v) > 1}
    assert duplicates == {}
    missing = sorted(set(acked) - set(stored))
    assert missing == []
    for tag, data in acked.items():
        assert stored[tag][0].endswith(b"\r\n" + data)
    assert len(acked) >= TARGET_ACKED
    assert attempted >= len(stored) >= len(acked)
