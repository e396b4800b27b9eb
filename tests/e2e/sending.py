"""What the sending end-to-end tests share: the whole server whose FakeResolver routes
``remote.test`` to an aiosmtpd sink on loopback, a clock the tests move, TLS certificates from
trustme, and DKIM verification against the records we tell operators to publish.

Imported as ``e2e.sending`` (``tests`` is on the path).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import httpx
import trustme
from sqlalchemy import select

from api.apiserver import FakeClock
from mailboxkit.dns.dkimkeys import domain_keys
from mailboxkit.dns.records import DomainProfile, RecordPurpose, domain_records
from mailboxkit.dns.resolver import FakeResolver
from mailboxkit.store import models as m
from mailboxkit.store.accounts import Inbox
from mailserver.outbound.sink import Sink, SinkHandler

from harness import ServerThread, free_port, server_settings

REMOTE = "remote.test"


def routes(port_host: str = "127.0.0.1") -> dict[str, dict[str, list[Any]]]:
    return {
        REMOTE: {"MX": [(10, f"mx.{REMOTE}")]},
        f"mx.{REMOTE}": {"A": [port_host]},
    }


@dataclass
class Sending:
    server: ServerThread
    sink: Sink
    clock: FakeClock
    ca: trustme.CA

    def inbox(self, address: str, account_id: str | None = None) -> tuple[Inbox, str]:
        """A new inbox and an API key of its account."""
        inbox = self.server.create_inbox(address, account_id)
        return inbox, self.server.create_key(inbox.account_id)

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.http_url + "/api/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def settled(self, count: int) -> None:
        """Wait until the queue worker has recorded ``count`` recipient attempts."""
        worker = self.server.app.outbound
        assert worker is not None
        self.server.call(worker.settled(count))

    def events(self, kind: str) -> list[Any]:
        return self.server.query(
            select(m.events.c.payload, m.events.c.inbox_id, m.events.c.message_id)
            .where(m.events.c.type == kind)
            .order_by(m.events.c.seq)
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def dkim_lookup(self, domain: str) -> Callable[..., bytes | None]:
        async def keys() -> list[Any]:
            async with self.server.app.db.read() as conn:
                return await domain_keys(conn, domain)

        published = tuple(k.published for k in self.server.call(keys()))
        profile = DomainProfile(domain, "mx.example.test", published)
        txt = {
            f"{r.name}.": r.value.encode()
            for r in domain_records(profile)
            if r.purpose is RecordPurpose.DKIM
        }

        def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
            return txt.get(name.decode() if isinstance(name, bytes) else name)

        return lookup

    def dkim_verdicts(self, raw: bytes, domain: str = "example.test") -> list[tuple[bytes, bool]]:
        """(algorithm, verifies) of each DKIM-Signature of ``raw``, top first."""
        lookup = self.dkim_lookup(domain)
        checker = dkim.DKIM(raw)
        found = []
        signatures = [v for n, v in checker.headers if n.lower() == b"dkim-signature"]
        for index, value in enumerate(signatures):
            algorithm = dkim.util.parse_tag_value(value)[b"a"]
            try:
                ok = bool(dkim.DKIM(raw).verify(index, dnsfunc=lookup))
            except dkim.ValidationError:
                ok = False
            found.append((algorithm, ok))
        return found

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.sink.stop()


def tls_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("mx.example.test", "127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_file, key_file


def sink_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server context for the sink, with a certificate from ``ca`` for ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def start_sending(
    tmp_path: Path,
    database_url: str,
    handler: SinkHandler | None = None,
    *,
    ca: trustme.CA | None = None,
    sink_tls: Sequence[str] = (),
    records: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Sending:
    """The server and its sink. ``sink_tls``: the names of a certificate (from ``ca``) the sink
    offers with STARTTLS (none: no STARTTLS); ``records``: more DNS records for the resolver."""
    ca = ca or trustme.CA()
    sink = Sink(handler, tls_context=sink_context(ca, *sink_tls) if sink_tls else None)
    port = sink.start()
    cert_file, key_file = tls_files(ca, tmp_path / "tls")
    http = free_port()
    values: dict[str, Any] = {
        "http_port": http,
        "public_url": f"http://127.0.0.1:{http}",
        "outbound_mx_port": port,
        "smarthost_port": port,
        "api_rate_limit": 0,
        "tls_cert_file": cert_file,
        "tls_key_file": key_file,
        "submission_auth_failure_delay": 0,
    }
    values.update(overrides)
    server = ServerThread(
        server_settings(tmp_path / "data", database_url, **values),
        resolver=FakeResolver({**routes(), **(records or {})}),
    )
    clock = FakeClock()
    server.app.clock = clock
    try:
        server.start()
    except BaseException:
        sink.stop()
        raise
    return Sending(server, sink, clock, ca)
