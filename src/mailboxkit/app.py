"""The composition root: builds every component from Settings and runs them in one process.

Nothing else in the package reads settings or makes engines, stores or servers; it all starts
here and is passed down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from publicsuffixlist import PublicSuffixList

from mailboxkit.api.app import ApiConfig, ApiContext, create_app
from mailboxkit.config import Settings
from mailboxkit.dns.authresults import AuthVerdicts
from mailboxkit.dns.inbound import verify_inbound
from mailboxkit.dns.resolver import DnsResolver, Resolver
from mailboxkit.mailserver.delivery import DeliveryPipeline
from mailboxkit.mailserver.imap.auth import AuthThrottle
from mailboxkit.mailserver.imap.context import ImapLimits, Services
from mailboxkit.mailserver.imap.server import ImapServer
from mailboxkit.mailserver.smtp import (
    ConnectionLimiter,
    MxHandler,
    MxLimits,
    MxServer,
    Verifier,
)
from mailboxkit.mailserver.tls import self_signed, server_context
from mailboxkit.store.accounts import ensure_domain
from mailboxkit.store.blobs import BlobStore, open_blob_store
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus
from mailboxkit.store.mailboxes import MailboxChanges
from mailboxkit.store.migrate import upgrade_async
from mailboxkit.store.ratelimit import Limit

log = logging.getLogger(__name__)


def secret_key(settings: Settings) -> bytes:
    """The configured secret, else one generated once into the data dir (mode 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def open_blobs(settings: Settings, clock: Clock | None = None) -> BlobStore:
    clock = clock or SystemClock()
    return open_blob_store(
        settings.blob_url,
        data_dir=settings.data_dir,
        signing_key=secret_key(settings),
        public_base_url=settings.base_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        clock=lambda: clock.now().timestamp(),
    )


def api_config(settings: Settings) -> ApiConfig:
    """The settings the HTTP API enforces."""
    return ApiConfig(
        domain=settings.domain,
        registration_enabled=settings.registration_enabled,
        registration_per_ip=Limit(settings.registration_limit_per_ip, 3600),
        registration_per_email=Limit(settings.registration_limit_per_email, 3600),
        requests_per_key=Limit(settings.api_rate_limit, 60),
        max_body_size=settings.api_max_body_size,
        download_url_ttl=settings.download_url_ttl,
    )


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP;
    # with Nagle on, pipelined SMTP replies meet delayed ACKs and each message stalls 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class MailboxKit:
    """Every listener and worker of one server process."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    db: Database = field(init=False)
    blobs: BlobStore = field(init=False)
    bus: EventBus = field(default_factory=EventBus)
    changes: MailboxChanges = field(default_factory=MailboxChanges)
    resolver: Resolver | None = None  # None: a DnsResolver from the settings
    ports: dict[str, int] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _limiter: ConnectionLimiter | None = None
    _pipeline: DeliveryPipeline | None = None
    _imap: ImapServer | None = None
    _http: uvicorn.Server | None = None
    _http_task: asyncio.Task[None] | None = None
    _http_socket: socket.socket | None = None

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.migrate_on_start:
            await upgrade_async(s.sqlalchemy_url)
        self.db = Database.open(s.sqlalchemy_url)
        self.blobs = open_blobs(s, self.clock)
        if self.resolver is None:
            self.resolver = DnsResolver(s.nameservers, timeout=s.dns_timeout)
        async with self.db.write() as conn:
            await ensure_domain(conn, s.domain, now=self.clock.now())
        self._pipeline = DeliveryPipeline(
            self.db, self.blobs, self.bus, batch_size=s.ingest_batch_size
        )
        self._pipeline.start()
        if s.smtp_port:
            await self._start_mx()
        if s.imap_port or s.imaps_port:
            await self._start_imap()
        if s.http_port:
            await self._start_http()
        log.info("event=started %s", " ".join(f"{k}={v}" for k, v in self.ports.items()))

    def _tls(self) -> tuple[Path, Path]:
        s = self.settings
        if s.tls_cert_file is not None and s.tls_key_file is not None:
            return s.tls_cert_file, s.tls_key_file
        return self_signed(s.data_dir, s.hostname)

    def _verifier(self) -> Verifier | None:
        if not self.settings.verify_inbound:
            return None
        resolver, receiver, psl = self.resolver, self.settings.hostname, PublicSuffixList()
        assert resolver is not None

        async def verify(message: bytes, *, ip: str, mail_from: str, helo: str) -> AuthVerdicts:
            return await verify_inbound(
                message,
                ip=ip,
                mail_from=mail_from,
                helo=helo,
                resolver=resolver,
                receiver=receiver,
                psl=psl,
            )

        return verify

    async def _start_mx(self) -> None:
        s = self.settings
        assert self._pipeline is not None
        context = server_context(*self._tls())
        handler = MxHandler(
            self.db,
            self._pipeline,
            self.clock,
            hostname=s.hostname,
            max_recipients=s.smtp_max_recipients,
            verify=self._verifier(),
            dmarc_reject=s.dmarc_reject,
        )
        limits = MxLimits(
            max_message_size=s.smtp_max_message_size,
            max_recipients=s.smtp_max_recipients,
            max_line_length=s.smtp_max_line_length,
            timeout=s.smtp_timeout,
        )
        self._limiter = limiter = ConnectionLimiter(
            s.smtp_max_connections, s.smtp_max_connections_per_ip
        )
        server = await asyncio.get_running_loop().create_server(
            lambda: MxServer(handler, limiter, limits, hostname=s.hostname, tls_context=context),
            sock=listen_socket(s.bind, s.smtp_port),
        )
        self._servers.append(server)
        self.ports["smtp"] = server.sockets[0].getsockname()[1]

    async def _start_imap(self) -> None:
        s = self.settings
        limits = ImapLimits(
            max_line=s.imap_max_line_length,
            max_literal=s.imap_max_literal_size,
            max_command=s.imap_max_command_size,
            login_timeout=s.imap_login_timeout,
            idle_timeout=s.imap_idle_timeout,
            auth_failure_delay=s.imap_auth_failure_delay,
            max_auth_failures=s.imap_max_auth_failures,
            auth_failure_window=s.imap_auth_failure_window,
            max_connections=s.imap_max_connections,
            max_connections_per_ip=s.imap_max_connections_per_ip,
        )
        services = Services(
            db=self.db,
            blobs=self.blobs,
            clock=self.clock,
            bus=self.bus,
            changes=self.changes,
            limits=limits,
            throttle=AuthThrottle(s.imap_max_auth_failures, s.imap_auth_failure_window),
            tls_context=server_context(*self._tls()),
            allow_plaintext=s.plaintext_allowed,
        )
        self._imap = ImapServer(services)
        for name, port, implicit_tls in (
            ("imap", s.imap_port, False),
            ("imaps", s.imaps_port, True),
        ):
            if port:
                sock = listen_socket(s.bind, port)
                self.ports[name] = await self._imap.listen(sock, implicit_tls=implicit_tls)

    async def _start_http(self) -> None:
        s = self.settings
        app = create_app(
            ApiContext(
                db=self.db,
                blobs=self.blobs,
                clock=self.clock,
                config=api_config(s),
                changes=self.changes,
            )
        )
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False
        )
        self._http = uvicorn.Server(config)
        self._http_socket = sock = listen_socket(s.bind, s.http_port)
        # Server.serve() would take over SIGINT/SIGTERM, which the CLI handles for every
        # listener, so its steps are run here without the signal capture.
        config.load()
        self._http.lifespan = config.lifespan_class(config)
        await self._http.startup(sockets=[sock])
        self._http_task = asyncio.create_task(self._http.main_loop(), name="http")
        self.ports["http"] = self._http_socket.getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, let sessions finish (up to the grace period), flush, close."""
        for server in self._servers:
            server.close()
        if self._limiter is not None:
            await self._limiter.drain(self.settings.shutdown_grace)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
            await self._http.shutdown(sockets=[self._http_socket] if self._http_socket else None)
        if self._imap is not None:
            await self._imap.stop(self.settings.shutdown_grace)
        if self._pipeline is not None:
            await self._pipeline.stop()
        await self.blobs.close()
        await self.db.close()
        log.info("event=stopped")
