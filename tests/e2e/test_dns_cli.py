"""`mailboxkit dns records`, `dns check` and `dkim rotate` as subprocesses, against a real nsd
and real HTTPS policy hosts (MTA-STS, trustme certificates).

One nsd, started by the test on 127.0.0.1 at a free port, serves:
- good.test: the `dns records --zone` output itself (the round trip);
- alt.test: right, but written differently (other splits of TXT strings, SPF by address, p=reject,
  A records instead of CNAMEs, other SRV weights);
- missing.test: nothing but SOA and NS;
- bad.test: a wrong value for every record;
- host.test and 1.0.0.127.in-addr.arpa: this server's name, address and reverse name.

This server's policy host (127.0.0.1) serves the right MTA-STS policy; bad.test's points at
another address (127.0.0.2), whose host serves a wrong one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import trustme

from mailboxkit.dns.records import DomainProfile, mta_sts_policy
from mailserver.outbound.policyhost import PolicyHost, policy_text

from harness import free_port

HOST = "mail.host.test"
HOST_IP = "127.0.0.1"
REVERSE_ZONE = "1.0.0.127.in-addr.arpa"
SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])  # where Debian puts nsd
READY_TIMEOUT = 20.0
STRANGER_IP = "127.0.0.2"  # not this host's address, yet a policy host answers there
DOMAINS = ("good.test", "alt.test", "bad.test", "missing.test")


def _soa(zone: str) -> str:
    return (
        f"$ORIGIN {zone}.\n$TTL 300\n"
        f"@ IN SOA ns.host.test. hostmaster.host.test. 1 3600 600 86400 300\n"
        f"@ IN NS ns.host.test.\n"
    )


class Nsd:
    """An nsd in the foreground serving `zones` (name -> zone file text) on 127.0.0.1."""

    def __init__(self, directory: Path, zones: dict[str, str]) -> None:
        binary = shutil.which("nsd") or shutil.which("nsd", path=SBIN)
        if binary is None:
            pytest.fail(
                "nsd is not installed: these tests need a real authoritative DNS server. "
                "Install it with `apt-get install nsd` (.ci/packages lists it for CI)."
            )
        self.binary = binary
        self.directory = directory
        self.zones = zones
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        d = self.directory
        lines = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.port}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{d}"',
            f'    pidfile: "{d / "nsd.pid"}"',
            f'    zonelistfile: "{d / "zone.list"}"',
            f'    xfrdfile: "{d / "xfrd.state"}"',
            f'    xfrdir: "{d}"',
            f'    logfile: "{d / "nsd.log"}"',
            "    server-count: 1",
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for name, text in self.zones.items():
            path = d / f"{name}.zone"
            path.write_text(text)
            lines += ["zone:", f'    name: "{name}"', f'    zonefile: "{path}"']
        config = d / "nsd.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def log(self) -> str:
        path = self.directory / "nsd.log"
        return path.read_text() if path.exists() else "(no log)"

    def start(self) -> None:
        for _ in range(3):  # a free port can be taken again before nsd binds it
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.binary, "-d", "-c", str(self._config())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return
        pytest.fail(f"nsd did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        """Until nsd answers for every zone (querying it), or exits."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(self.zones)
        while pending:
            if self.proc.poll() is not None:
                return False
            query = dns.message.make_query(pending[0], "SOA")
            try:
                response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    pending.pop(0)
                    continue
            except (dns.exception.Timeout, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"nsd did not answer within {READY_TIMEOUT}s:\n{self.log()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)  # waits on the child: returns at once if it exited
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def mailboxkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailboxkit.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _records(env: dict[str, str], domain: str) -> list[dict[str, Any]]:
    done = mailboxkit(env, "dns", "records", domain, "--json")
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def _zone(domain: str, records: list[dict[str, Any]], line: Callable[[dict[str, Any]], str]) -> str:
    return _soa(domain) + "".join(f"{line(r)}\n" for r in records)


def _quoted(text: str, size: int) -> str:
    return " ".join(f'"{text[i : i + size]}"' for i in range(0, len(text), size))


def right_but_different(record: dict[str, Any]) -> str:
    name, value, purpose = f"{record['name']}.", record["value"], record["purpose"]
    lines = {
        "mx": f"{name} IN MX 5 {HOST}.",
        "spf": f'{name} IN TXT "v=spf1 ip4:{HOST_IP} ~all"\n{name} IN TXT "site-verification=1"',
        "dkim": f"{name} IN TXT {_quoted(value, 100)}",
        "dmarc": f'{name} IN TXT "v=DMARC1; p=reject; adkim=s"',
        "mta-sts": f'{name} IN TXT "{value}"',
        "mta-sts-host": f"{name} IN A {HOST_IP}",
        "tls-rpt": f'{name} IN TXT "v=TLSRPTv1; rua=mailto:tls@elsewhere.test"',
        "autoconfig": f"{name} IN CNAME {HOST}.",
    }
    if purpose == "service":
        priority, _, port, target = value.split()
        return f"{name} IN SRV {priority} 7 {port} {target}"
    return lines[purpose]


def wrong(record: dict[str, Any]) -> str:
    name, value, purpose = f"{record['name']}.", record["value"], record["purpose"]
    if purpose == "dkim":  # an RSA key cut short; the Ed25519 key labelled RSA
        if "k=rsa" in value:
            return f'{name} IN TXT "{value[:60]}"'
        return f'{name} IN TXT "{value.replace("k=ed25519", "k=rsa")}"'
    if purpose == "service":
        return f"{name} IN SRV 0 1 1 {HOST}."
    lines = {
        "mx": f"{name} IN MX 10 mx.elsewhere.test.",
        "spf": f'{name} IN TXT "v=spf1 -all"',
        "dmarc": f'{name} IN TXT "v=DMARC1; p=banana"',
        "mta-sts": f'{name} IN TXT "v=STSv1; id=stale1"',
        "mta-sts-host": f"{name} IN A {STRANGER_IP}",
        "tls-rpt": f'{name} IN TXT "v=TLSRPTv1"',
        "autoconfig": f"{name} IN A 192.0.2.1",
    }
    return lines[purpose]


@dataclass
class World:
    env: dict[str, str]  # with MAILBOXKIT_DNS_NAMESERVERS pointing at the nsd
    data_dir: Path
    nsd: Nsd


@pytest.fixture(scope="module")
def policy_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The policy hosts; yields the settings that make the CLI fetch from them."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    names = [f"mta-sts.{d}" for d in DOMAINS]
    ours = PolicyHost(ca, *names)
    ours.serve(mta_sts_policy(DomainProfile("good.test", HOST)))
    port = ours.start()
    stranger = PolicyHost(ca, *names, address=STRANGER_IP, port=port)
    stranger.serve(policy_text("enforce", "mx.elsewhere.test", max_age=604800))
    stranger.start()
    try:
        yield {
            "MAILBOXKIT_OUTBOUND_MTA_STS_PORT": str(port),
            "MAILBOXKIT_OUTBOUND_TLS_CA_FILE": str(ca_file),
        }
    finally:
        ours.stop()
        stranger.stop()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, policy_hosts: dict[str, str]
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dns")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOXKIT_")}
    env.update(
        MAILBOXKIT_DATA_DIR=str(root / "data"),
        MAILBOXKIT_HOSTNAME=HOST,
        MAILBOXKIT_DOMAIN="host.test",
        MAILBOXKIT_LOG_LEVEL="WARNING",
        **policy_hosts,
    )
    zone = mailboxkit(env, "dns", "records", "good.test", "--zone")
    assert zone.returncode == 0, zone.stderr
    zones = {
        "host.test": _soa("host.test") + f"ns IN A {HOST_IP}\nmail IN A {HOST_IP}\n",
        REVERSE_ZONE: _soa(REVERSE_ZONE) + f"@ IN PTR {HOST}.\n",
        "good.test": _soa("good.test") + zone.stdout,
        "alt.test": _zone("alt.test", _records(env, "alt.test"), right_but_different),
        "bad.test": _zone("bad.test", _records(env, "bad.test"), wrong),
        "missing.test": _soa("missing.test"),
    }
    _records(env, "missing.test")  # its DKIM keys exist, its records do not
    nsd_dir = root / "nsd"
    nsd_dir.mkdir()
    nsd = Nsd(nsd_dir, zones)
    nsd.start()
    try:
        env["MAILBOXKIT_DNS_NAMESERVERS"] = f"127.0.0.1:{nsd.port}"
        yield World(env, root / "data", nsd)
    finally:
        nsd.stop()


def check(env: dict[str, str], domain: str) -> tuple[int, dict[tuple[str, str], str]]:
    done = mailboxkit(env, "dns", "check", domain, "--json")
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is (done.returncode == 0)
    return done.returncode, {(c["purpose"], c["name"]): c["status"] for c in result["checks"]}


def test_records_zone_loaded_into_nsd_checks_ok(world: World) -> None:
    code, statuses = check(world.env, "good.test")
    assert code == 0
    assert set(statuses.values()) == {"ok"}, statuses
    purposes = {purpose for purpose, _ in statuses}
    assert {"mx-host", "mx", "spf", "dkim", "dmarc", "mta-sts", "tls-rpt", "ptr"} <= purposes
    assert statuses["mta-sts-policy", "https://mta-sts.good.test/.well-known/mta-sts.txt"] == "ok"
    assert sum(1 for purpose, _ in statuses if purpose == "dkim") == 2


def test_right_records_written_differently_check_ok(world: World) -> None:
    code, statuses = check(world.env, "alt.test")
    assert code == 0
    assert set(statuses.values()) == {"ok"}, statuses


def test_missing_records_fail_the_check(world: World) -> None:
    code, statuses = check(world.env, "missing.test")
    assert code == 1
    for (purpose, name), status in statuses.items():
        expected = "ok" if purpose in ("mx-host", "ptr") else "missing"
        assert status == expected, (purpose, name)
    text = mailboxkit(world.env, "dns", "check", "missing.test")
    assert text.returncode == 1
    assert "missing  MX     missing.test" in text.stdout
    assert f"expected: 10 {HOST}." in text.stdout


def test_wrong_records_fail_the_check_with_found_and_expected(world: World) -> None:
    code, statuses = check(world.env, "bad.test")
    assert code == 1
    for (purpose, name), status in statuses.items():
        expected = "ok" if purpose in ("mx-host", "ptr") else "wrong"
        assert status == expected, (purpose, name)
    text = mailboxkit(world.env, "dns", "check", "bad.test").stdout
    assert "wrong    MX     bad.test" in text
    assert "found:    10 mx.elsewhere.test." in text
    assert f"expected: 10 {HOST}." in text
    assert "found:    v=spf1 -all" in text
    assert (
        "why:      mode is enforce, not testing; mx is mx.elsewhere.test, not mail.host.test"
        in text
    )


def test_rotation_adds_selectors_that_are_missing_until_published(
    world: World, tmp_path: Path
) -> None:
    env = dict(world.env, MAILBOXKIT_DATA_DIR=str(tmp_path / "data"))
    shutil.copytree(world.data_dir, tmp_path / "data")
    before = [r["name"] for r in _records(env, "good.test") if r["purpose"] == "dkim"]
    rotated = mailboxkit(env, "dkim", "rotate", "good.test")
    assert rotated.returncode == 0, rotated.stderr
    after = [r["name"] for r in _records(env, "good.test") if r["purpose"] == "dkim"]
    new = sorted(set(after) - set(before))
    assert len(new) == 2 and set(before) <= set(after)
    assert all(name in rotated.stdout for name in new)
    code, statuses = check(env, "good.test")
    assert code == 1
    assert {name: statuses["dkim", name] for name in after} == {
        **{name: "ok" for name in before},
        **{name: "missing" for name in new},
    }


def test_rotating_an_unknown_domain_fails(world: World) -> None:
    done = mailboxkit(world.env, "dkim", "rotate", "unknown.test")
    assert done.returncode == 1
    assert "not a domain of this server" in done.stderr


def test_a_bad_domain_name_is_refused(world: World) -> None:
    done = mailboxkit(world.env, "dns", "records", "not a domain")
    assert done.returncode == 2
    assert "not a valid domain name" in done.stderr
