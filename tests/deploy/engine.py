"""Podman, as the deployment tests drive it (scripts/test-deploy sets up its storage and config)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

PODMAN = os.environ.get("MAILBOXKIT_DEPLOY_PODMAN", "podman")
IMAGE = os.environ.get("MAILBOXKIT_DEPLOY_IMAGE", "localhost/mailboxkit:latest")


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def published_port(container: str, port: int) -> int:
    """The loopback port the container's ``port``/tcp is published on."""
    out = podman("port", container, f"{port}/tcp").stdout.strip().splitlines()[0]
    host, _, number = out.rpartition(":")
    assert host in {"127.0.0.1", "0.0.0.0"}, out
    return int(number)


def wait_healthy(container: str, timeout: float = 180.0) -> None:
    """Run the image's HEALTHCHECK (podman here has no systemd timer to run it) until it passes.

    A container with a restart policy may exit and come back meanwhile (compose starts
    MailboxKit beside PostgreSQL, which may not answer yet): only the deadline ends the wait
    then. Without one, a container that is not running has failed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = podman("healthcheck", "run", container, check=False)
        if result.returncode == 0:
            return
        found = podman(
            "inspect", "--format", "{{.State.Status}} {{.HostConfig.RestartPolicy.Name}}", container
        ).stdout
        state, _, policy = found.strip().partition(" ")
        restarts = policy not in {"", "no"}
        if (state != "running" and not restarts) or time.monotonic() > deadline:
            logs = podman("logs", "--tail", "50", container, check=False)
            raise AssertionError(
                f"{container} not healthy (state {state}, restart policy {policy or 'none'}):\n"
                f"{result.stdout}{result.stderr}\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(1)
