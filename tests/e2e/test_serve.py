"""The ``mailboxkit`` command as operators run it: inbox creation, serve, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from mailboxkit.store import models as m
from mailboxkit.store.db import Database

from harness import ServerThread, cli, free_port, serve_env, server_settings


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return serve_env(tmp_path / "data", database_url, smtp_port=free_port(), http_port=free_port())


@pytest.fixture
def serving(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailboxkit.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the server says when every listener is up
        if "event=started" in line:
            break
    else:
        pytest.fail(f"server exited early with {proc.wait()}")
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stderr.close()


def test_inbox_create_prints_the_register_fields_once(env: dict[str, str]) -> None:
    created = cli(env, "inbox", "create", "Agent.Smith@Example.TEST", "--json")
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # not even the migrations of a new database
    found = json.loads(created.stdout)
    assert set(found) == {"inbox_id", "email", "api_key"}
    assert found["email"] == "agent.smith@example.test"
    assert found["api_key"].startswith("mbk_") and len(found["api_key"]) == 44
    again = cli(env, "inbox", "create", "agent.smith@example.test")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    listed = json.loads(cli(env, "inbox", "list", "--json").stdout)
    assert [i["email"] for i in listed] == ["agent.smith@example.test"]
    assert found["api_key"] not in cli(env, "inbox", "list").stdout


def test_invalid_settings_fail_with_a_message(env: dict[str, str]) -> None:
    result = cli({**env, "MAILBOXKIT_SMTP_PORT": "seventy"}, "migrate")
    assert result.returncode == 2
    assert "smtp_port" in result.stderr


def test_sigterm_finishes_the_transaction_in_flight(
    env: dict[str, str], serving: subprocess.Popen[str]
) -> None:
    assert cli(env, "inbox", "create", "bot@example.test").returncode == 0
    port = int(env["MAILBOXKIT_SMTP_PORT"])
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()
    client.mail("alice@sender.test")
    client.rcpt("bot@example.test")
    code, _ = client.docmd("DATA")
    assert code == 354
    serving.send_signal(signal.SIGTERM)
    # New sessions are refused once the listener is closed...
    assert serving.stderr is not None
    for line in serving.stderr:
        if "event=shutdown_requested" in line:
            break
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=5)
    # ...while the session in flight completes, acknowledged after it is stored.
    client.send(b"Subject: in flight\r\n\r\nbody\r\n.\r\n")
    code, text = client.getreply()
    assert (code, text[:6]) == (250, b"2.0.0 ")
    client.quit()
    assert serving.wait(timeout=30) == 0
    assert asyncio.run(subjects(env["MAILBOXKIT_DATABASE_URL"])) == ["in flight"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_the_workers_for_large_messages_end_with_the_server(
    env: dict[str, str], serving: subprocess.Popen[str], stop: signal.Signals
) -> None:
    assert cli(env, "inbox", "create", "bot@example.test").returncode == 0
    large = b"Subject: a long report\r\n\r\n" + b"one line of a long report\r\n" * 4000
    with smtplib.SMTP("127.0.0.1", int(env["MAILBOXKIT_SMTP_PORT"])) as client:
        assert client.sendmail("alice@sender.test", ["bot@example.test"], large) == {}
    workers = psutil.Process(serving.pid).children(recursive=True)
    assert workers  # the message was parsed in a worker process
    serving.send_signal(stop)
    serving.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []  # none left behind, even when the server could not stop them itself
    assert asyncio.run(subjects(env["MAILBOXKIT_DATABASE_URL"])) == ["a long report"]


async def subjects(url: str) -> list[str]:
    db = Database.open(url)
    try:
        async with db.read() as conn:
            return list((await conn.execute(select(m.messages.c.subject))).scalars())
    finally:
        await db.close()


def test_a_taken_port_fails_the_start_and_releases_the_others(
    tmp_path: Path, database_url: str
) -> None:
    """The MX listens first; the HTTP port is taken: start fails, and the MX port is free again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = server_settings(
            tmp_path / "data", database_url, http_port=taken.getsockname()[1]
        )
        server = ServerThread(settings)
        with pytest.raises(OSError, match="in use"):
            server.start()
    with socket.socket() as again:
        again.bind(("127.0.0.1", settings.smtp_port))  # would fail if still listening
    retry = ServerThread(settings.model_copy(update={"http_port": free_port()}))
    retry.start()  # the database and data dir were released too
    try:
        with smtplib.SMTP("127.0.0.1", settings.smtp_port) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        retry.stop()
