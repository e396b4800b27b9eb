"""The whole server on loopback for end-to-end tests, and small helpers they share."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from mailboxkit.app import MailboxKit
from mailboxkit.config import Settings
from mailboxkit.dns.resolver import FakeResolver, Resolver
from mailboxkit.store.accounts import Inbox, create_account, create_api_key, create_inbox

# Ports for test servers come from below the kernel's ephemeral range (32768 and up on Linux):
# a port the kernel handed out as free can be taken by an outgoing connection's local end before
# the server binds it. Walking the range from a random start keeps one run from reusing a port
# and concurrent runs apart.
_PORTS = range(20000, 32000)
_next_port = [random.randrange(len(_PORTS))]


def free_port() -> int:
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port[0] % len(_PORTS)]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for a test server")


class ServerThread:
    """The whole server running on its own event loop in a background thread."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Tests never ask the machine's resolver: by default every name is unknown.
        self.app = MailboxKit(settings, resolver=resolver or FakeResolver({}))

    def call(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> None:
        try:
            self.call(self.app.start())
        except BaseException:  # the app released what it had started; end the loop too
            self.end_loop()
            raise

    def stop(self) -> None:
        try:
            self.call(self.app.stop())
        finally:
            self.end_loop()

    def end_loop(self) -> None:
        """End the event loop and its thread (after the app stopped, or failed to start)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def create_inbox(self, address: str, account_id: str | None = None) -> Inbox:
        async def create() -> Inbox:
            async with self.app.db.write() as conn:
                now = self.app.clock.now()
                owner = account_id or await create_account(
                    conn, name=address, owner_email=None, now=now
                )
                return await create_inbox(conn, account_id=owner, address=address, now=now)

        result: Inbox = self.call(create())
        return result

    def query(self, statement: Any) -> list[Any]:
        """Rows of a SELECT, run on the server's own database."""

        async def run() -> list[Any]:
            async with self.app.db.read() as conn:
                return list((await conn.execute(statement)).all())

        result: list[Any] = self.call(run())
        return result

    def execute(self, statement: Any) -> None:
        """Run a write statement on the server's own database."""

        async def run() -> None:
            async with self.app.db.write() as conn:
                await conn.execute(statement)

        self.call(run())

    def blob(self, key: str) -> bytes:
        data: bytes = self.call(self.app.blobs.get(key))
        return data

    @property
    def smtp_port(self) -> int:
        return self.app.ports["smtp"]

    @property
    def submission_port(self) -> int:
        return self.app.ports["submission"]

    @property
    def submissions_port(self) -> int:
        return self.app.ports["submissions"]

    @property
    def imap_port(self) -> int:
        return self.app.ports["imap"]

    @property
    def imaps_port(self) -> int:
        return self.app.ports["imaps"]

    def create_key(self, account_id: str, inbox_id: str | None = None) -> str:
        """A new API key of the account (scoped to one inbox if given): its secret."""

        async def create() -> str:
            async with self.app.db.write() as conn:
                key = await create_api_key(
                    conn, account_id=account_id, inbox_id=inbox_id, now=self.app.clock.now()
                )
                return key.secret

        result: str = self.call(create())
        return result

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.app.ports['http']}"


class ImapLine:
    """A raw IMAP connection read line by line, for exact-byte checks and unsolicited
    responses (a read waits on the protocol, never on a clock)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def read(self) -> bytes:
        return self.file.readline()

    def read_literal(self, size: int) -> bytes:
        return self.file.read(size)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, tag: str, text: str | bytes) -> list[bytes]:
        """Send ``tag text`` and return every line up to and including the tagged one."""
        line = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + line + b"\r\n")
        return self.until_tagged(tag)

    def until_tagged(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.read()
            assert line, "connection closed"
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def server_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "hostname": "mx.example.test",
        "domain": "example.test",
        "bind": "127.0.0.1",
        "smtp_port": free_port(),
        "submission_port": 0,
        "submissions_port": 0,
        "imap_port": 0,
        "imaps_port": 0,
        "http_port": free_port(),
        "migrate_on_start": False,
        "shutdown_grace": 5,
        # Inbound SPF/DKIM/DMARC is on by default; tests of it turn it on (tests/e2e/
        # test_smtp_auth.py), the others keep messages byte for byte without its header.
        "verify_inbound": False,
    }
    values.update(overrides)
    return Settings(**values)


_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")


def serve_env(data_dir: Path, database_url: str = "", **settings: object) -> dict[str, str]:
    """The environment of ``mailboxkit`` run by a test as an operator would: this process's
    environment, the data dir, the database (default: SQLite in the data dir), the test host and
    domain, loopback, every listener off (port 0) unless given, INFO logs, no DNS checks of
    inbound mail (tests never ask the machine's resolver); ``settings`` by field name without
    the prefix (``smtp_port=2525`` is MAILBOXKIT_SMTP_PORT)."""
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"no such settings: {', '.join(unknown)}")
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "hostname": "mx.example.test",
        "domain": "example.test",
        "bind": "127.0.0.1",
        **{f"{name}_port": 0 for name in _LISTENERS},
        "log_level": "INFO",
        "verify_inbound": False,
        **settings,
    }
    env = dict(os.environ)
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"MAILBOXKIT_{name.upper()}"] = text
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mailboxkit ARGS`` as an operator runs it, with ``env``; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "mailboxkit.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class OwnDatabase:
    """A database of one test on the test run's PostgreSQL, and the way to cut it off."""

    admin_url: str  # another database of the same server: never cut off
    name: str

    @property
    def url(self) -> str:
        base = self.admin_url.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{self.name}"

    def run(self, sql: str) -> None:
        """Run ``sql`` as the admin, on a thread and event loop of its own: callable from
        tests and from servers' handlers (a running loop) alike."""

        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run()).result()

    def cut_off(self) -> None:
        self.run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.run(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'"
        )

    def reconnect(self) -> None:
        self.run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
