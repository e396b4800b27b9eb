"""The Ansible playbooks applied to a Debian box in a podman container (systemd as PID 1).

site.yml converges it (PostgreSQL, the hardened unit on the standard ports, TLS, nginx, ufw,
backups); a second run changes nothing, nor does --check --diff; mail goes round on ports 25 and
143 and the API answers through nginx; deploy.yml upgrades to a release with a new migration and
rollback.yml goes back, both while a stream of SMTP deliveries goes on (nothing acknowledged is
lost, only 4xx or refused connections during the switch); a certificate replaced on the box is
served by every TLS listener after a reload, with the same main process.
The connection is containers.podman.podman, from the collections the ansible package ships.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from deploy import mailcheck
from deploy.engine import podman, published_port, unique
from deploy.mailstream import DeliveryStream, stored_message_ids

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
TARGET_IMAGE = os.environ.get(
    "MAILBOXKIT_DEPLOY_TARGET_IMAGE", "localhost/mailboxkit-deploy/target:bookworm"
)
PORTS = (25, 143, 443, 465, 587, 993)


@dataclass(frozen=True)
class Box:
    name: str
    inventory: Path

    def play(self, playbook: str, *args: str) -> dict[str, int]:
        """Run ``playbook`` against the box; the PLAY RECAP counts for it."""
        source = os.environ.get("MAILBOXKIT_DEPLOY_CONTEXT")
        if source:  # the same checkout the image was built from (a later -e still wins)
            args = ("-e", f"mailboxkit_source_dir={Path(source).resolve()}", *args)
        result = subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory), playbook, *args],
            cwd=REPO / "ansible",
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        logs = Path(os.environ.get("MAILBOXKIT_DEPLOY_CACHE", "/tmp")) / "logs"
        logs.mkdir(exist_ok=True)
        runs = len(list(logs.glob(f"{self.name}-*.yml-*.log")))
        log = logs / f"{self.name}-{playbook}-{runs}.log"
        log.write_text(result.stdout + result.stderr)
        recap = re.search(rf"^{re.escape(self.name)}\s+:\s+(.*)$", result.stdout, re.M)
        assert result.returncode == 0 and recap, f"{log}:\n{result.stdout[-3000:]}{result.stderr}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}

    def exec(self, *args: str) -> str:
        return podman("exec", self.name, *args).stdout

    def log(self, what: str, text: str) -> Path:
        """Keep ``text`` beside the playbook logs; returns the file."""
        logs = Path(os.environ.get("MAILBOXKIT_DEPLOY_CACHE", "/tmp")) / "logs"
        logs.mkdir(exist_ok=True)
        path = logs / f"{self.name}-{what}.log"
        path.write_text(text)
        return path

    def main_pid(self) -> int:
        return int(self.exec("systemctl", "show", "-p", "MainPID", "--value", "mailboxkit"))

    def psql(self, sql: str) -> str:
        return self.exec("runuser", "-u", "postgres", "--", "psql", "-d", "mailboxkit", "-tAc", sql)


def _host_ca_bundle() -> Path | None:
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None


def _inventory(path: Path, name: str) -> Path:
    group_vars = path / "group_vars" / "mailboxkit"
    group_vars.mkdir(parents=True)
    hosts = {
        "mailboxkit": {
            "hosts": {
                name: {
                    "ansible_connection": "containers.podman.podman",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        }
    }
    (path / "hosts.yml").write_text(json.dumps(hosts))
    settings = {
        "mailboxkit_hostname": "mail.example.test",
        "mailboxkit_domain": "example.test",
        "mailboxkit_public_url": "https://mail.example.test",
        "vault_mailboxkit_db_password": "db-pass-for-tests-only",
        "vault_mailboxkit_secret_key": "secret-key-for-tests-only-0123456789",
        # Nothing here may leave the machine: no PTR lookup, no probe of outbound port 25.
        "mailboxkit_preflight_check_ptr": False,
        "mailboxkit_preflight_check_outbound_25": False,
        "mailboxkit_keep_releases": 2,
        # Generous on a loaded machine: tries, 2 s apart, of /readyz after a (re)start.
        "mailboxkit_app_smoke_retries": 90,
        # Only SIGHUP (systemctl reload) loads a changed certificate here, so the certificate
        # test shows that path and not the server's own look at the files.
        "mailboxkit_settings": {"TLS_RELOAD_INTERVAL": "0"},
    }
    (group_vars / "main.yml").write_text(json.dumps(settings))
    return path / "hosts.yml"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    name = unique("mbk-deploy-box")
    publish = [f"--publish=127.0.0.1::{port}" for port in PORTS]
    podman(
        "run", "--detach", "--name", name, "--hostname", "mail.example.test",
        "--systemd=always", "--privileged", *publish, TARGET_IMAGE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            state = podman("exec", name, "systemctl", "is-system-running", check=False)
            if state.stdout.strip() in {"running", "degraded"}:
                break
            assert time.monotonic() < deadline, state.stdout + state.stderr
            time.sleep(1)
        # This machine reaches the package index through a TLS-inspecting proxy: give the box
        # the same CA bundle pip here uses (a box elsewhere needs nothing of the kind).
        bundle = _host_ca_bundle()
        if bundle is not None:
            podman("cp", str(bundle.resolve()), f"{name}:/etc/ssl/certs/host-ca-bundle.crt")
            conf = tmp_path_factory.mktemp("pip") / "pip.conf"
            conf.write_text("[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\n")
            podman("cp", str(conf), f"{name}:/etc/pip.conf")
        inventory = _inventory(tmp_path_factory.mktemp("inventory"), name)
        yield Box(name, inventory)
    finally:
        if os.environ.get("MAILBOXKIT_DEPLOY_KEEP") != "1":
            podman("rm", "--force", "--time", "10", name, check=False)


@pytest.fixture(scope="module")
def converged(box: Box) -> dict[str, int]:
    return box.play("site.yml")


def test_site_converges_and_serves(box: Box, converged: dict[str, int]) -> None:
    assert converged["failed"] == 0 and converged["unreachable"] == 0
    assert box.exec("systemctl", "is-active", "mailboxkit", "postgresql", "nginx").split() == [
        "active",
        "active",
        "active",
    ]
    unit = box.exec("systemctl", "show", "mailboxkit", "-p", "User", "-p", "AmbientCapabilities")
    assert "User=mailboxkit" in unit and "cap_net_bind_service" in unit
    # Listening on the standard ports as an unprivileged user.
    listening = box.exec("ss", "-Htlnp")
    for port in (25, 587, 465, 143, 993):
        assert re.search(rf":{port}\s.*\"mailboxkit\"", listening), listening


def test_second_run_changes_nothing(box: Box, converged: dict[str, int]) -> None:
    recap = box.play("site.yml")
    assert recap["changed"] == 0, recap


def test_check_diff_changes_nothing(box: Box, converged: dict[str, int]) -> None:
    recap = box.play("site.yml", "--check", "--diff")
    assert recap["changed"] == 0, recap


def test_mail_round_trip_through_the_box(box: Box, converged: dict[str, int]) -> None:
    created = box.exec("mailboxkit", "inbox", "create", "agent@example.test", "--json")
    inbox = mailcheck.Inbox.from_json(created)
    mailcheck.round_trip(
        inbox,
        smtp_port=published_port(box.name, 25),
        imap_port=published_port(box.name, 143),
        api_base=f"https://127.0.0.1:{published_port(box.name, 443)}",
    )


def test_backup_runs(box: Box, converged: dict[str, int]) -> None:
    box.exec("systemctl", "start", "mailboxkit-backup.service")
    listing = box.exec("sh", "-c", "ls /var/backups/mailboxkit/*/")
    assert {"database.pgdump", "data.tar.gz", "config.tar.gz"} <= set(listing.split())


SOURCE = Path(os.environ.get("MAILBOXKIT_DEPLOY_CONTEXT") or REPO)


def _source_with_a_migration(directory: Path) -> tuple[Path, str]:
    """A copy of the source with one more migration (a table and a column): the next release."""
    from alembic.script import ScriptDirectory

    tree = directory / "next-release"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(SOURCE / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(SOURCE / "src", tree / "src", ignore=ignore)
    migrations = tree / "src" / "mailboxkit" / "store" / "migrations"
    head = ScriptDirectory(str(migrations)).get_current_head()
    revision = "9001_deploy_check"
    (migrations / "versions" / f"{revision}.py").write_text(
        f'''"""deployment test: one table and one column more

Revision ID: {revision}
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("deploy_check", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("messages", sa.Column("deploy_check", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "deploy_check")
    op.drop_table("deploy_check")
'''
    )
    return tree, revision


def test_deploy_and_rollback_while_mail_flows(
    box: Box, converged: dict[str, int], tmp_path: Path
) -> None:
    """deploy.yml (a release with a migration), then rollback.yml, under a stream of mail."""

    def current() -> str:
        return box.exec("readlink", "/opt/mailboxkit/current").strip()

    first, first_pid = current(), box.main_pid()
    source, revision = _source_with_a_migration(tmp_path)
    created = box.exec("mailboxkit", "inbox", "create", "stream@example.test", "--json")
    inbox = mailcheck.Inbox.from_json(created)
    stream = DeliveryStream(published_port(box.name, 25), inbox)
    stream.start()
    try:
        stream.wait_acked(5)  # mail flows before the switch...
        recap = box.play("deploy.yml", "-e", f"mailboxkit_source_dir={source}")
        assert recap["changed"] > 0
        second, second_pid = current(), box.main_pid()
        assert second != first and Path(second).parent == Path(first).parent
        assert second_pid not in {0, first_pid}
        box.exec("test", "-f", f"{second}/.complete")
        assert box.psql("SELECT version_num FROM alembic_version").strip() == revision
        assert box.psql("SELECT count(*) FROM deploy_check").strip() == "0"
        stream.wait_acked(stream.acked_count() + 5)  # ...and after it

        box.play("rollback.yml")
        assert current() == first
        assert box.main_pid() not in {0, second_pid}
        assert box.exec("systemctl", "is-active", "mailboxkit").strip() == "active"
        # The older release runs on the newer schema (migrations only add).
        assert box.psql("SELECT version_num FROM alembic_version").strip() == revision
        stream.wait_acked(stream.acked_count() + 5)
    finally:
        stream.stop()
        box.log("stream", stream.summary())
    assert stream.failures == [], (stream.failures, dict(stream.tolerated))
    # Only "try again later" during the switches: 4xx replies and refused or dropped connections.
    assert all(not why[0].isdigit() or why.startswith("4") for why in stream.tolerated), dict(
        stream.tolerated
    )
    stored = stored_message_ids(published_port(box.name, 143), inbox)
    missing = set(stream.acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:10]}"
    assert len(stream.acked) >= 15


def test_release_script_matches_the_playbook(box: Box, converged: dict[str, int]) -> None:
    """mailboxkit-release (Forge's deploy script) finds the release deploy.yml made."""
    current = box.exec("readlink", "/opt/mailboxkit/current").strip()
    source = Path(os.environ.get("MAILBOXKIT_DEPLOY_CONTEXT") or REPO)
    box.exec("mkdir", "-p", "/srv/checkout")
    for name in ("pyproject.toml", "README.md", "src"):
        podman("cp", str(source / name), f"{box.name}:/srv/checkout/")
    out = box.exec("/usr/local/sbin/mailboxkit-release", "/srv/checkout")
    assert "installing" not in out, out
    assert f"{Path(current).name} is live" in out, out
    assert box.exec("readlink", "/opt/mailboxkit/current").strip() == current


def _served_certificates(box: Box, ca: trustme.CA) -> dict[int, bytes]:
    """The certificate each TLS listener of the box serves to a new connection (verified
    against ``ca``; the host name is the box's, the address the published loopback port)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    found: dict[int, bytes | None] = {}
    for port in (993, 143, 25, 587, 465):
        published = published_port(box.name, port)
        if port == 993:
            with imaplib.IMAP4_SSL("127.0.0.1", published, ssl_context=context, timeout=30) as i:
                found[port] = i.sock.getpeercert(binary_form=True)
        elif port == 143:
            with imaplib.IMAP4("127.0.0.1", published, timeout=30) as i:
                i.starttls(context)
                found[port] = i.sock.getpeercert(binary_form=True)
        elif port == 465:
            with smtplib.SMTP_SSL("127.0.0.1", published, context=context, timeout=30) as smtp:
                smtp.ehlo("client.example.org")
                found[port] = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        else:
            with smtplib.SMTP("127.0.0.1", published, timeout=30) as smtp:
                smtp.ehlo("client.example.org")
                smtp.starttls(context=context)
                found[port] = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert all(isinstance(der, bytes) for der in found.values()), found
    return {port: der for port, der in found.items() if der is not None}


def test_renewed_certificate_is_served_after_a_reload(
    box: Box, converged: dict[str, int], tmp_path: Path
) -> None:
    """TLS mode host: a certificate replaced on the box is served by IMAPS, IMAP and SMTP
    STARTTLS and submission 465 after a reload; the unit's main process stays the same.

    First the TLS role's handler (site.yml finds a new certificate), then the path unit
    (a renewal on the box). The box's MailboxKit looks at the files only on SIGHUP."""
    ca = trustme.CA()
    first, second = ca.issue_cert("mail.example.test"), ca.issue_cert("mail.example.test")
    ports = (993, 143, 25, 587, 465)

    def install(leaf: trustme.LeafCert) -> dict[int, bytes]:
        """Replace the key, then the certificate, as a renewal does."""
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "fullchain.pem"))
        leaf.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
        box.exec("mkdir", "-p", "/etc/ssl/mbk", "/root/staging")
        for name in ("privkey.pem", "fullchain.pem"):
            podman("cp", str(tmp_path / name), f"{box.name}:/root/staging/{name}")
            box.exec("mv", f"/root/staging/{name}", f"/etc/ssl/mbk/{name}")
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        return dict.fromkeys(ports, der)

    pid = box.main_pid()
    assert pid > 0
    expected = install(first)
    recap = box.play(
        "site.yml",
        "-e", "mailboxkit_tls_mode=host",
        "-e", "mailboxkit_tls_host_cert=/etc/ssl/mbk/fullchain.pem",
        "-e", "mailboxkit_tls_host_key=/etc/ssl/mbk/privkey.pem",
    )  # fmt: skip
    assert recap["changed"] > 0
    assert _served_certificates(box, ca) == expected  # the handler reloaded it
    assert box.main_pid() == pid

    expected = install(second)  # the path unit installs it and reloads
    deadline = time.monotonic() + 120
    while True:
        try:
            served = _served_certificates(box, ca)
        except ssl.SSLCertVerificationError:
            served = {}  # not the other CA's: only this test's certificates are trusted
        if served == expected:
            break
        assert time.monotonic() < deadline, box.exec(
            "journalctl", "-u", "mailboxkit-tls-sync", "-u", "mailboxkit", "--no-pager", "-n", "80"
        )
        time.sleep(1)
    assert box.main_pid() == pid
    restarts = box.exec("systemctl", "show", "-p", "NRestarts", "--value", "mailboxkit")
    assert restarts.strip() == "0"
    journal = box.exec("journalctl", "-u", "mailboxkit", "--no-pager", "-o", "cat")
    assert journal.count("event=tls_reloaded") >= 2, journal[-3000:]
