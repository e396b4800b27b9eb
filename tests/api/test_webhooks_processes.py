"""Webhooks across real ``mailboxkit serve`` processes: a dispatcher SIGKILLed mid-delivery
sends again only what was in flight, and two servers sharing PostgreSQL deliver each event to
each endpoint exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.webhook_receiver import Received, Receiver
from mailboxkit.store import models as m
from mailboxkit.store.db import Database

from harness import free_port, serve_env


class Serve:
    """One ``mailboxkit serve`` process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        up = asyncio.Event()
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
        self._reader = asyncio.create_task(self._read(self.proc, up))
        await asyncio.wait_for(up.wait(), 60)

    async def _read(self, proc: asyncio.subprocess.Process, up: asyncio.Event) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            if b"event=started" in line:
                up.set()
            if b"Traceback" in line or b" ERROR " in line:
                sys.stderr.write(line.decode(errors="replace"))

    async def kill(self) -> None:
        assert self.proc is not None and self._reader is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self._reader

    async def terminate(self) -> None:
        assert self.proc is not None and self._reader is not None
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 60) == 0
        await self._reader

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


def _env(data: Path, database_url: str, **settings: object) -> dict[str, str]:
    return serve_env(
        data,
        database_url,
        smtp_port=free_port(),
        http_port=free_port(),
        webhook_allow_private_targets=True,
        **settings,
    )


async def _inbox(env: dict[str, str], address: str) -> dict[str, Any]:
    create = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailboxkit.cli",
        "inbox",
        "create",
        address,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await create.communicate()
    assert create.returncode == 0, out
    made: dict[str, Any] = json.loads(out)
    return made


def _hook(env: dict[str, str], key: str, url: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{env['MAILBOXKIT_HTTP_PORT']}/api/v1"
    r = httpx.post(
        f"{base}/webhooks", json={"url": url}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _send(env: dict[str, str], to: str, subjects: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", int(env["MAILBOXKIT_SMTP_PORT"])) as smtp:
        for subject in subjects:
            raw = f"From: a@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhi\r\n"
            assert smtp.sendmail("a@sender.test", [to], raw.encode()) == {}


def _subject(got: Received) -> str:
    subject: str = json.loads(got.body)["data"]["subject"]
    return subject


async def _deliveries(database_url: str) -> list[Any]:
    db = Database.open(database_url)
    try:
        async with db.read() as conn:
            return list((await conn.execute(select(m.webhook_deliveries))).all())
    finally:
        await db.close()


async def test_sigkill_mid_delivery_duplicates_only_what_was_in_flight(
    tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path / "data", database_url, webhook_timeout=1)
    made = await _inbox(env, "hooked@example.test")
    receiver = Receiver().start()
    server = Serve(env)
    await server.start()
    try:
        await asyncio.to_thread(_hook, env, made["api_key"], receiver.url())
        await asyncio.to_thread(
            _send, env, "hooked@example.test", [f"before {n}" for n in range(5)]
        )
        before = await asyncio.to_thread(receiver.take, 5)
        assert sorted(map(_subject, before)) == [f"before {n}" for n in range(5)]

        receiver.hold.set()  # the next requests get no answer: they are in flight...
        await asyncio.to_thread(_send, env, "hooked@example.test", ["held 0", "held 1"])
        held = await asyncio.to_thread(receiver.take, 2)
        await server.kill()  # ...when the process dies
        killed_at = time.monotonic()
        receiver.hold.clear()

        await server.start()
        await asyncio.to_thread(_send, env, "hooked@example.test", ["after 0"])
        # The held ones come again once their claim's lease (2 x timeout) runs out.
        wanted = {"after 0", "held 0", "held 1"}
        while wanted:
            wanted.discard(_subject(await asyncio.to_thread(receiver.next, 30)))
        await server.terminate()
    finally:
        server.ensure_stopped()
        receiver.stop()

    # Each event once before the crash at most, and once after at most: a duplicate only
    # when a request was in flight (or its answer not yet recorded) at the kill.
    before_kill = Counter(r.id for r in receiver.all if r.at < killed_at)
    after_kill = Counter(r.id for r in receiver.all if r.at >= killed_at)
    assert set(before_kill.values()) == {1} and set(after_kill.values()) == {1}
    assert {r.id for r in held} <= set(after_kill)
    assert len(set(before_kill) | set(after_kill)) == 8
    rows = await _deliveries(database_url)
    assert len(rows) == 8 and all(r.status == "succeeded" for r in rows)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_servers_deliver_each_event_to_each_endpoint_once(
    tmp_path: Path, database_url: str
) -> None:
    one = _env(tmp_path / "one", database_url, webhook_concurrency=4)
    two = _env(tmp_path / "two", database_url, webhook_concurrency=4)
    made = await _inbox(one, "shared@example.test")
    receiver = Receiver().start()
    servers = [Serve(one), Serve(two)]
    try:
        for server in servers:
            await server.start()
        for path in ("/a", "/b", "/c"):
            await asyncio.to_thread(_hook, one, made["api_key"], receiver.url(path))
        per_server = 60
        await asyncio.gather(
            asyncio.to_thread(
                _send, one, "shared@example.test", [f"one {n}" for n in range(per_server)]
            ),
            asyncio.to_thread(
                _send, two, "shared@example.test", [f"two {n}" for n in range(per_server)]
            ),
        )
        got = await asyncio.to_thread(receiver.take, 3 * 2 * per_server, 120)
        for server in servers:
            await server.terminate()
    finally:
        for server in servers:
            server.ensure_stopped()
        receiver.stop()
    pairs = Counter((r.path, r.id) for r in receiver.all)
    assert len(got) == len(pairs) == 3 * 2 * per_server
    assert set(pairs.values()) == {1}
    rows = await _deliveries(database_url)
    assert len(rows) == 3 * 2 * per_server
    assert {(r.status, r.attempts) for r in rows} == {("succeeded", 1)}
