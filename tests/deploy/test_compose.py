"""compose.yaml under podman-compose: MailboxKit on PostgreSQL, mail round trip, clean down.

The PostgreSQL image is MAILBOXKIT_POSTGRES_IMAGE: scripts/test-deploy makes a local stand-in
from Debian's postgresql-15 (tagged postgres:15-bookworm), since no registry is reachable there.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import mailcheck
from deploy.engine import podman, unique, wait_healthy

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = ("SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "HTTP")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    project: str
    ports: dict[str, int]
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman-compose", "--project-name", self.project, "--file", "compose.yaml", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    def container(self, service: str) -> str:
        return podman(
            "ps", "--quiet",
            "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    ports = {name: _free_port() for name in PUBLISHED}
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "MAILBOXKIT_HOSTNAME": "mail.example.test",
        "MAILBOXKIT_DOMAIN": "example.test",
        **{f"PUBLISH_{name}": f"127.0.0.1:{port}" for name, port in ports.items()},
    }
    env.setdefault("MAILBOXKIT_POSTGRES_IMAGE", "postgres:15-bookworm")
    stack = Stack(unique("mbk-deploy-compose"), ports, env)
    try:
        stack.compose("up", "--detach", "--no-build")
        wait_healthy(stack.container("mailboxkit"))
        yield stack
    finally:
        subprocess.run(
            ["podman-compose", "--project-name", stack.project, "--file", "compose.yaml",
             "down", "--volumes", "--timeout", "10"],
            cwd=REPO, env=env, capture_output=True, timeout=180, check=False,
        )  # fmt: skip


def test_runs_on_postgresql(stack: Stack) -> None:
    app = stack.container("mailboxkit")
    assert "mailboxkit.db" not in podman("exec", app, "ls", "/data").stdout
    query = "SELECT version_num FROM alembic_version"
    psql = ["psql", "-U", "mailboxkit", "-d", "mailboxkit", "-tAc", query]
    version = podman("exec", stack.container("postgres"), *psql).stdout.strip()
    assert version
    mailcheck.wait_healthy(stack.ports["HTTP"])
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['HTTP']}/readyz", timeout=10) as r:
        assert r.status == 200


def test_smtp_delivery_read_over_imap_and_api(stack: Stack) -> None:
    create = ["mailboxkit", "inbox", "create", "agent@example.test", "--json"]
    created = podman("exec", stack.container("mailboxkit"), *create)
    inbox = mailcheck.Inbox.from_json(created.stdout)
    mailcheck.round_trip(
        inbox,
        smtp_port=stack.ports["SMTP"],
        imap_port=stack.ports["IMAP"],
        api_base=f"http://127.0.0.1:{stack.ports['HTTP']}",
    )
