"""A certificate replaced on disk serves new connections without a restart.

ServerCertificate on its own (handshakes over memory BIOs): reload, an invalid pair kept out, the
look at changed files. Then ``mailboxkit serve`` as operators run it, on every TLS listener (IMAPS,
IMAP STARTTLS, SMTP MX and submission STARTTLS, submission 465), reloaded by a real SIGHUP; and
the in-process server picking up changed files with no signal at all. Certificates come from a
trustme CA and every client verifies them.
"""

from __future__ import annotations

import imaplib
import os
import queue
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mailboxkit.mailserver.tls import ServerCertificate

import harness
from harness import ServerThread, free_port, server_settings

LISTENERS = ("imaps", "imap", "smtp", "submission", "submissions")


class Pair:
    """A certificate and its key as files, replaced the way renewals do it (rename over)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_file, self.key_file = directory / "fullchain.pem", directory / "privkey.pem"

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        new = path.with_name(path.name + ".new")
        new.write_bytes(data)
        os.replace(new, path)

    def install(self, leaf: trustme.LeafCert, *, key_of: trustme.LeafCert | None = None) -> None:
        """Write ``leaf`` (with the key of ``key_of`` if given: a mismatched pair)."""
        self._replace(self.key_file, (key_of or leaf).private_key_pem.bytes())
        self._replace(self.cert_file, b"".join(pem.bytes() for pem in leaf.cert_chain_pems))


def der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def issue(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("mx.example.test", "127.0.0.1")


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """A whole TLS handshake over memory BIOs; the certificate the client was served."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname="mx.example.test")
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, side in enumerate((client_side, server_side)):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done):
            break
    assert all(done), "handshake did not finish"
    served = client_side.getpeercert(binary_form=True)
    assert served is not None
    return served


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_reload_serves_the_new_pair_to_new_handshakes(ca: trustme.CA, tmp_path: Path) -> None:
    first, second = issue(ca), issue(ca)
    pair = Pair(tmp_path)
    pair.install(first)
    cert = ServerCertificate(pair.cert_file, pair.key_file, check_interval=0)
    client = client_context(ca)
    assert handshake(cert.context, client) == der(first)
    pair.install(second)
    assert handshake(cert.context, client) == der(first)  # nothing looks at the files
    assert cert.reload()
    assert handshake(cert.context, client) == der(second)
    assert handshake(cert.context, client) == der(second)


@pytest.mark.parametrize("broken", ["mismatched key", "missing key", "not PEM"])
def test_an_invalid_pair_is_refused_and_the_previous_one_kept(
    ca: trustme.CA, tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = issue(ca), issue(ca)
    pair = Pair(tmp_path)
    pair.install(first)
    cert = ServerCertificate(pair.cert_file, pair.key_file, check_interval=0)
    if broken == "mismatched key":
        pair.install(second, key_of=first)
    elif broken == "missing key":
        pair.key_file.unlink()
    else:
        pair.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert not cert.reload()
    assert "event=tls_reload_failed" in caplog.text
    assert handshake(cert.context, client_context(ca)) == der(first)


def test_a_changed_pair_is_loaded_at_the_next_look(ca: trustme.CA, tmp_path: Path) -> None:
    first, second = issue(ca), issue(ca)
    pair = Pair(tmp_path)
    pair.install(first)
    clock = Clock()
    cert = ServerCertificate(pair.cert_file, pair.key_file, check_interval=5, clock=clock)
    client = client_context(ca)
    pair.install(second)
    clock.now += 4.9
    assert handshake(cert.context, client) == der(first)  # not time to look yet
    clock.now += 0.1
    assert handshake(cert.context, client) == der(second)


def test_a_half_renewed_pair_waits_for_the_other_file(ca: trustme.CA, tmp_path: Path) -> None:
    """A renewal writes the key, then the certificate: a look between the two keeps the old."""
    first, second = issue(ca), issue(ca)
    pair = Pair(tmp_path)
    pair.install(first)
    clock = Clock()
    cert = ServerCertificate(pair.cert_file, pair.key_file, check_interval=5, clock=clock)
    client = client_context(ca)
    pair._replace(pair.key_file, second.private_key_pem.bytes())
    clock.now += 5
    assert handshake(cert.context, client) == der(first)
    pair.install(second)
    clock.now += 1
    assert handshake(cert.context, client) == der(first)  # looked 1 s ago
    clock.now += 4
    assert handshake(cert.context, client) == der(second)


def served(listener: str, port: int, context: ssl.SSLContext) -> bytes:
    """Connect to ``listener`` (STARTTLS where it has it); the certificate it serves."""
    host = "127.0.0.1"
    if listener == "imaps":
        with imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=30) as imap:
            found = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    elif listener == "imap":
        with imaplib.IMAP4(host, port, timeout=30) as imap:
            imap.starttls(context)
            found = imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    elif listener == "submissions":
        with smtplib.SMTP_SSL(host, port, context=context, timeout=30) as smtp:
            smtp.ehlo("client.example.org")
            found = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    else:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.ehlo("client.example.org")
            smtp.starttls(context=context)
            smtp.ehlo("client.example.org")
            found = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert isinstance(found, bytes)
    return found


def every_listener(ports: dict[str, int], context: ssl.SSLContext) -> dict[str, bytes]:
    return {name: served(name, ports[name], context) for name in LISTENERS}


class Serving:
    """``mailboxkit serve`` in a subprocess; its log lines as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailboxkit.cli", "serve"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # end of the log

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {text!r} in {timeout} s; log:\n{''.join(self.log)}")
            self.log.append(line)
            if text in line:
                return line
            if not line:
                pytest.fail(f"server exited ({self.proc.wait()}); log:\n{''.join(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    pair = Pair(tmp_path / "tls")
    return harness.serve_env(
        tmp_path / "data",
        **{f"{name}_port": free_port() for name in LISTENERS},
        tls_cert_file=pair.cert_file,
        tls_key_file=pair.key_file,
        tls_reload_interval=0,  # only the signal reloads
    )


def test_sighup_reloads_the_certificate_of_every_listener(
    ca: trustme.CA, tmp_path: Path, serve_env: dict[str, str]
) -> None:
    first, second, third = issue(ca), issue(ca), issue(ca)
    pair = Pair(tmp_path / "tls")
    pair.install(first)
    ports = {name: int(serve_env[f"MAILBOXKIT_{name.upper()}_PORT"]) for name in LISTENERS}
    context = client_context(ca)
    server = Serving(serve_env)
    try:
        server.wait_for("event=started")
        assert every_listener(ports, context) == dict.fromkeys(LISTENERS, der(first))
        with imaplib.IMAP4_SSL(
            "127.0.0.1", ports["imaps"], ssl_context=context, timeout=30
        ) as held:
            pair.install(second)
            server.proc.send_signal(signal.SIGHUP)
            server.wait_for("event=tls_reloaded")
            assert every_listener(ports, context) == dict.fromkeys(LISTENERS, der(second))
            # The session from before keeps its own connection and certificate.
            assert held.noop()[0] == "OK"
            assert held.sock.getpeercert(binary_form=True) == der(first)  # type: ignore[attr-defined]

        # A pair that does not belong together is refused; the last good one stays.
        pair.install(third, key_of=second)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("event=tls_reload_failed")
        assert every_listener(ports, context) == dict.fromkeys(LISTENERS, der(second))
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert server.proc.returncode == 0


@pytest.fixture
def in_process(
    ca: trustme.CA, tmp_path: Path, sqlite_template: Path
) -> Iterator[tuple[ServerThread, Pair]]:
    database = tmp_path / "mailboxkit.db"
    database.write_bytes(sqlite_template.read_bytes())
    pair = Pair(tmp_path / "tls")
    pair.install(issue(ca))
    ports = {f"{name}_port": free_port() for name in LISTENERS}
    settings = server_settings(
        tmp_path / "data",
        f"sqlite+aiosqlite:///{database}",
        **ports,
        tls_cert_file=pair.cert_file,
        tls_key_file=pair.key_file,
        tls_reload_interval=0.2,
    )
    server = ServerThread(settings)
    server.start()
    yield server, pair
    server.stop()


def test_changed_files_are_served_without_a_signal(
    ca: trustme.CA, in_process: tuple[ServerThread, Pair]
) -> None:
    server, pair = in_process
    first, second = issue(ca), issue(ca)
    context = client_context(ca)
    ports = server.app.ports
    deadline = time.monotonic() + 30
    for leaf in (first, second):
        pair.install(leaf)
        while served("imaps", ports["imaps"], context) != der(leaf):
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.1)  # the server looks at most every 0.2 s: ask again
        assert every_listener(ports, context) == dict.fromkeys(LISTENERS, der(leaf))
