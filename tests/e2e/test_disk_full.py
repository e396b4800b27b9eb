"""A full disk under the blob store: the server answers "try again later" (SMTP 452 4.3.1,
IMAP NO [UNAVAILABLE], HTTP 503), keeps nothing half-written, and takes mail again once space
is freed.

The server runs in a mount namespace of its own (``unshare``) with its blob directory on a
small tmpfs filled to the last byte, so the disk is really full; the test reaches that
filesystem through ``/proc/PID/root`` to free space. Skipped where namespaces are not allowed.
"""

from __future__ import annotations

import imaplib
import json
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import free_port, serve_env

ADDRESS = "bot@example.test"
SERVE = (sys.executable, "-m", "mailboxkit.cli", "serve")
FILL = (
    'mount -t tmpfs -o size=256k tmpfs "$0" && (cat /dev/zero > "$0/filler" 2>/dev/null; '
    'test -s "$0/filler") && exec "$@"'
)


def _namespaces_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_allowed(), reason="needs unshare with user and mount namespaces"
)


class FullDiskServer:
    """``mailboxkit serve`` with its blob directory on a full tmpfs only it can see."""

    def __init__(self, env: dict[str, str], blobs: Path) -> None:
        self.blobs = blobs
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c", FILL, str(blobs), *SERVE],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "event=started" in line:
                break
        else:
            pytest.fail(f"server exited early with {self.proc.wait()}: {''.join(self.log)}")
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.log.extend(self.proc.stderr)

    def seen(self, path: str = "") -> Path:
        """A path under the blob directory as the server sees it (on its tmpfs)."""
        return Path(f"/proc/{self.proc.pid}/root") / self.blobs.relative_to("/") / path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._drain.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


@pytest.fixture
def server(
    tmp_path: Path, database_url: str
) -> Iterator[tuple[FullDiskServer, dict[str, str], dict[str, str]]]:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    env = serve_env(
        tmp_path / "data",
        database_url,
        blob_url=blobs,
        smtp_port=free_port(),
        imap_port=free_port(),
        http_port=free_port(),
    )
    created = subprocess.run(
        [sys.executable, "-m", "mailboxkit.cli", "inbox", "create", ADDRESS, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    running = FullDiskServer(env, blobs)
    try:
        yield running, json.loads(created.stdout), env
    finally:
        running.stop()


def _message(tag: str) -> bytes:
    body = "".join(
        f"line {i} of a message that needs more room than is left\r\n" for i in range(400)
    )
    return (
        f"From: sender@remote.test\r\nTo: {ADDRESS}\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@remote.test>\r\n\r\n{body}"
    ).encode()


def test_full_disk_is_a_temporary_refusal_and_mail_flows_once_space_is_freed(
    server: tuple[FullDiskServer, dict[str, str], dict[str, str]],
) -> None:
    running, inbox, env = server
    key = inbox["api_key"]
    smtp_port = int(env["MAILBOXKIT_SMTP_PORT"])
    imap_port = int(env["MAILBOXKIT_IMAP_PORT"])

    with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("sender@remote.test", [ADDRESS], _message("while-full"))
        assert refused.value.smtp_code == 452
        assert refused.value.smtp_error.startswith(b"4.3.1 ")
        assert smtp.noop()[0] == 250  # the session goes on

    imap = imaplib.IMAP4("127.0.0.1", imap_port)
    imap.login(ADDRESS, key)
    typ, data = imap.append("INBOX", None, None, _message("appended-while-full"))
    assert typ == "NO"
    assert data[0].startswith(b"[UNAVAILABLE] Mail store out of space")
    assert imap.select("INBOX") == ("OK", [b"0"])  # nothing was stored

    http = f"http://127.0.0.1:{env['MAILBOXKIT_HTTP_PORT']}"
    ready = httpx.get(f"{http}/readyz")
    assert (ready.status_code, ready.json()["error"]["message"]) == (
        503,
        "blob store out of space",
    )
    sent = httpx.post(
        f"{http}/api/v1/inboxes/{inbox['inbox_id']}/messages/send",
        headers={"Authorization": f"Bearer {key}"},
        json={"to": ["someone@remote.test"], "subject": "while full", "text": "x" * 20000},
    )
    assert sent.status_code == 503
    assert sent.headers["retry-after"] == "5"
    assert sent.json()["error"] == {
        "code": "unavailable",
        "message": "the mail store is out of space; try again later",
    }

    # Nothing half-written is left taking the space.
    leftovers = [p.name for p in running.seen().rglob("*") if p.is_file()]
    assert leftovers == ["filler"]

    running.seen("filler").unlink()
    assert httpx.get(f"{http}/readyz").status_code == 200
    with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
        assert smtp.sendmail("sender@remote.test", [ADDRESS], _message("received-later")) == {}
    typ, _ = imap.append("INBOX", None, None, _message("appended-later"))
    assert typ == "OK"
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    _, found = imap.search(None, "HEADER", "Message-ID", "received-later@remote.test")
    assert found == [b"1"]
    imap.logout()

    assert running.stop() == 0
    log = "".join(running.log)
    assert "Traceback" not in log  # expected in operation: warning lines, not crashes
