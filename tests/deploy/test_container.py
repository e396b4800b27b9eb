"""The image from the Dockerfile, run with podman: healthy, unprivileged, and mail goes round.

An SMTP delivery to the published MX port is read back over IMAP (STARTTLS, the API key as
password) and over the HTTP API; the data outlives the container in its /data volume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

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
