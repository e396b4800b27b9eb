"""The image from the Dockerfile, run with podman: healthy, unprivileged, and mail goes round.

An SMTP delivery to the published MX port is read back over IMAP (STARTTLS, the API key as
password) and over the HTTP API; the data outlives the container in its /data volume; a
certificate replaced in the mounted directory is served after ``kill --signal HUP``.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from deploy import mailcheck
from deploy.engine import IMAGE, podman, published_port, unique, wait_healthy

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

PORTS = {"smtp": 2525, "submission": 2587, "imap": 1143, "imaps": 1993, "http": 8025}


def _run(name: str, volume: str) -> None:
    publish = [f"--publish=127.0.0.1::{port}" for port in PORTS.values()]
    podman(
        "run", "--detach", "--name", name, *publish,
        "--volume", f"{volume}:/data",
        "--env", "MAILBOXKIT_HOSTNAME=mail.example.test",
        "--env", "MAILBOXKIT_DOMAIN=example.test",
        IMAGE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = unique("mbk-deploy-data")
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def container(volume: str) -> Iterator[str]:
    name = unique("mbk-deploy")
    _run(name, volume)
    try:
        wait_healthy(name)
        yield name
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def _ports(container: str) -> dict[str, int]:
    return {key: published_port(container, port) for key, port in PORTS.items()}


def _inbox(container: str, address: str) -> mailcheck.Inbox:
    created = podman("exec", container, "mailboxkit", "inbox", "create", address, "--json")
    return mailcheck.Inbox.from_json(created.stdout)


def test_image_is_conventional() -> None:
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert config["User"] == "mailboxkit"
    assert config["Entrypoint"] == ["mailboxkit"]
    assert config["Cmd"] == ["serve"]
    assert list(config["Volumes"]) == ["/data"]
    assert {f"{p}/tcp" for p in PORTS.values()} <= set(config["ExposedPorts"])
    # Kept only in the docker image format (podman build --format docker); podman shows it at
    # the top level, docker under Config.
    healthcheck = image.get("Healthcheck") or config.get("Healthcheck")
    assert "/healthz" in " ".join(healthcheck["Test"])


def test_healthy_and_unprivileged(container: str) -> None:
    assert podman("exec", container, "id", "-u").stdout.strip() == "10025"
    top = podman("top", container, "user", "args").stdout
    assert "mailboxkit serve" in top
    assert "root" not in top
    mailcheck.wait_healthy(_ports(container)["http"])


def test_smtp_delivery_read_over_imap_and_api(container: str) -> None:
    ports = _ports(container)
    inbox = _inbox(container, "agent@example.test")
    mailcheck.round_trip(
        inbox,
        smtp_port=ports["smtp"],
        imap_port=ports["imap"],
        api_base=f"http://127.0.0.1:{ports['http']}",
    )


def test_mail_outlives_the_container(container: str, volume: str) -> None:
    """Stop drains and exits 0; a new container on the same volume has the message."""
    ports = _ports(container)
    inbox = _inbox(container, "keeper@example.test")
    subject = mailcheck.deliver(ports["smtp"], inbox)
    podman("stop", "--time", "40", container, timeout=60)
    state = json.loads(podman("inspect", container).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
    podman("rm", container)
    _run(container, volume)
    wait_healthy(container)
    raw = mailcheck.read_imap(_ports(container)["imap"], inbox, subject)
    assert f"Subject: {subject}".encode() in raw


def _served(ports: dict[str, int], ca: trustme.CA) -> tuple[bytes | None, bytes | None]:
    """The certificates IMAPS and SMTP STARTTLS serve to a new connection."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=context, timeout=30) as imap:
        imaps = imap.sock.getpeercert(binary_form=True)
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
        smtp.starttls(context=context)
        starttls = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    return imaps, starttls


def test_certificate_reload_on_sighup(tmp_path: Path) -> None:
    """The Docker path of a renewal: new files in the mounted directory, then SIGHUP; the
    same container serves them on IMAPS and SMTP STARTTLS (it only looks on the signal here)."""
    ca = trustme.CA()
    first, second = (ca.issue_cert("mail.example.test", "127.0.0.1") for _ in range(2))
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o755)
    tls.chmod(0o755)

    def install(leaf: trustme.LeafCert) -> bytes:
        for name, pem in (
            ("privkey.pem", leaf.private_key_pem),
            ("fullchain.pem", leaf.cert_chain_pems[0]),
        ):
            pem.write_to_path(str(tls / f"{name}.new"))
            (tls / f"{name}.new").chmod(0o644)  # the image's uid 10025 reads them
            os.replace(tls / f"{name}.new", tls / name)
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    expected = install(first)
    name = unique("mbk-deploy-tls")
    podman(
        "run", "--detach", "--name", name,
        "--publish=127.0.0.1::1993", "--publish=127.0.0.1::2525",
        "--volume", f"{tls}:/tls:ro",
        "--env", "MAILBOXKIT_HOSTNAME=mail.example.test",
        "--env", "MAILBOXKIT_DOMAIN=example.test",
        "--env", "MAILBOXKIT_TLS_CERT_FILE=/tls/fullchain.pem",
        "--env", "MAILBOXKIT_TLS_KEY_FILE=/tls/privkey.pem",
        "--env", "MAILBOXKIT_TLS_RELOAD_INTERVAL=0",
        IMAGE,
    )  # fmt: skip
    try:
        wait_healthy(name)
        ports = {"imaps": published_port(name, 1993), "smtp": published_port(name, 2525)}
        assert _served(ports, ca) == (expected, expected)
        started = podman("inspect", "--format", "{{.State.StartedAt}}", name).stdout

        expected = install(second)
        podman("kill", "--signal", "HUP", name)
        deadline = time.monotonic() + 60
        while _served(ports, ca) != (expected, expected):
            logs = podman("logs", "--tail", "30", name)
            assert time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        assert podman("inspect", "--format", "{{.State.StartedAt}}", name).stdout == started
        logs = podman("logs", name)
        assert "event=tls_reloaded" in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", "--volumes", "--time", "5", name, check=False)
