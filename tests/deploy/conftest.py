"""Deployment tests: the container image, compose.yaml and the Ansible playbook, under podman.

They need root, podman and locally built images, so the default ``pytest`` run skips this folder;
``scripts/test-deploy`` prepares everything and runs them with MAILBOXKIT_DEPLOY_TESTS=1.
"""

from __future__ import annotations

import os

if os.environ.get("MAILBOXKIT_DEPLOY_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
