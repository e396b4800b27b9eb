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


def wait_healthy(container: str, timeout: float = 90.0) -> None:
    """Run the image's HEALTHCHECK (podman here has no systemd timer to run it) until it passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = podman("healthcheck", "run", container, check=False)
        if result.returncode == 0:
            return
        state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            logs = podman("logs", "--tail", "50", container, check=False)
            raise AssertionError(
                f"{container} not healthy (state {state}):\n{result.stdout}{result.stderr}\n"
                f"{logs.stdout}{logs.stderr}"
            )
        time.sleep(1)
