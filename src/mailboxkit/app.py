"""The composition root: builds every component from Settings and runs them in one process.

Nothing else in the package reads settings or makes engines, stores or servers; it all starts
here (with the builders of ``components``) and is passed down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import httpx
import uvicorn
from publicsuffixlist import PublicSuffixList

from mailboxkit.api.app import ApiContext, create_app
from mailboxkit.api.auth import keep_counters_flushed
from mailboxkit.api.billing import BillingContext
from mailboxkit.api.dispatcher import USER_AGENT, DispatchConfig, Dispatcher
from mailboxkit.api.scheduler import DraftScheduler, SchedulerConfig
from mailboxkit.api.send import SendContext
from mailboxkit.api.sesfeedback import FeedbackContext
from mailboxkit.api.sns import SnsPolicy, SnsVerifier
from mailboxkit.components import (
    api_config,
    billing_context,
    events_config,
    listen_socket,
    mta_sts_fetcher,
    open_blobs,
    outbound_transport,
    payload_limits,
    sns_client,
    sweep_policy,
)
from mailboxkit.config import Settings
from mailboxkit.dns.authresults import AuthVerdicts
from mailboxkit.dns.check import RecordResolver
from mailboxkit.dns.inbound import verify_inbound
from mailboxkit.dns.mtasts import PolicyFetcher
from mailboxkit.dns.records import DomainProfile
from mailboxkit.dns.resolver import DnsResolver
from mailboxkit.dns.signing import DkimSigner
from mailboxkit.dns.verification import DomainRechecker
from mailboxkit.mailserver.delivery import DeliveryPipeline
from mailboxkit.mailserver.imap.auth import AuthThrottle
from mailboxkit.mailserver.imap.context import ImapLimits, Services
from mailboxkit.mailserver.imap.server import ImapServer
from mailboxkit.mailserver.outbound.retry import RetryPolicy
from mailboxkit.mailserver.outbound.transport import Transport
from mailboxkit.mailserver.outbound.worker import QueueWorker, WorkerConfig
from mailboxkit.mailserver.recipients import RecipientDirectory
from mailboxkit.mailserver.senders import SenderPolicy
from mailboxkit.mailserver.smtp import (
    ConnectionLimiter,
    MxHandler,
    MxLimits,
    MxServer,
    Verifier,
)
from mailboxkit.mailserver.submission import (
    SubmissionConfig,
    SubmissionHandler,
    SubmissionServer,
)
from mailboxkit.mailserver.tls import ServerCertificate, self_signed
from mailboxkit.store.accounts import ensure_domain
from mailboxkit.store.blobs import BlobStore
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.db import Database
from mailboxkit.store.events import EventBus
from mailboxkit.store.mailbox_changes import MailboxChanges, relay_events
from mailboxkit.store.migrate import upgrade_async
from mailboxkit.store.notify import ChangeNotifier, NotifyConfig, listen_dsn
from mailboxkit.store.offload import Offload
from mailboxkit.store.outbox import OutboxWriter
from mailboxkit.store.retention import RetentionJob
from mailboxkit.store.sweep import Sweeper
from mailboxkit.store.tasks import stop_tasks

log = logging.getLogger(__name__)


@dataclass
class MailboxKit:
    """Every listener and worker of one server process."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    db: Database = field(init=False)
    blobs: BlobStore = field(init=False)
    bus: EventBus = field(default_factory=EventBus)
    changes: MailboxChanges = field(default_factory=MailboxChanges)
    resolver: RecordResolver | None = None  # None: a DnsResolver from the settings
    ports: dict[str, int] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _limiter: ConnectionLimiter | None = None
    _pipeline: DeliveryPipeline | None = None
    _imap: ImapServer | None = None
    _http: uvicorn.Server | None = None
    _http_task: asyncio.Task[None] | None = None
    _http_socket: socket.socket | None = None
    transport: Transport | None = None  # None: the one the settings choose
    mta_sts: PolicyFetcher | None = None  # recipient domains' policies, and our own for checks
    outbound: QueueWorker | None = None
    signer: DkimSigner | None = None
    outbox: OutboxWriter | None = None
    _submission_limiter: ConnectionLimiter | None = None
    webhooks: Dispatcher | None = None
    _webhook_client: httpx.AsyncClient | None = None
    _api: ApiContext | None = None
    _notifier: ChangeNotifier | None = None
    _relay: asyncio.Task[None] | None = None
    _counters_task: asyncio.Task[None] | None = None
    recipients: RecipientDirectory | None = None  # RCPT look-ups of the MX and local delivery
    senders: SenderPolicy | None = None  # the allow and block lists as the MX reads them
    rechecker: DomainRechecker | None = None
    retention: RetentionJob | None = None
    _sns_client: httpx.AsyncClient | None = None
    _billing: BillingContext | None = None  # Stripe billing, when on
    _sweeper: Sweeper | None = None
    tls: ServerCertificate | None = None  # made with the first TLS listener
    drafts: DraftScheduler | None = None  # sends scheduled drafts when due
    offload: Offload = field(init=False)  # parses and composes large messages

    async def start(self) -> None:
        s = self.settings
        self.offload = Offload(s.offload_processes)
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.migrate_on_start:
            await upgrade_async(s.sqlalchemy_url)
        self.db = Database.open(s.sqlalchemy_url)
        try:
            await self._start_everything()
        except BaseException:  # e.g. a port taken: release what did start, then fail
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        log.info("event=started %s", " ".join(f"{k}={v}" for k, v in self.ports.items()))

    async def _start_everything(self) -> None:
        s = self.settings
        self.blobs = open_blobs(s, self.clock)
        if self.resolver is None:
            self.resolver = DnsResolver(s.nameservers, timeout=s.dns_timeout)
        self.mta_sts = mta_sts_fetcher(s, self.resolver)
        async with self.db.write() as conn:
            await ensure_domain(conn, s.domain, now=self.clock.now())
        self.recipients = RecipientDirectory(
            self.db, postmaster=s.postmaster, default_domain=s.domain
        )
        self.senders = SenderPolicy(self.db)
        await self._start_change_notices()
        self._pipeline = DeliveryPipeline(
            self.db, self.blobs, self.bus, batch_size=s.ingest_batch_size
        )
        self._pipeline.start()
        self._start_outbound()
        self._start_drafts()
        await self._start_webhooks()
        if s.smtp_port:
            await self._start_mx()
        if s.submission_port or s.submissions_port:
            await self._start_submission()
        if s.imap_port or s.imaps_port:
            await self._start_imap()
        if s.http_port:
            await self._start_http()
        self.rechecker = DomainRechecker(
            self.db,
            self.resolver,
            partial(DomainProfile.from_settings, s),
            self.clock,
            self.bus,
            interval=s.dns_recheck_interval,
        )
        self.rechecker.start()
        if s.store_sweep_interval:
            self._sweeper = Sweeper(
                self.db, self.blobs, self.clock, sweep_policy(s), s.store_sweep_interval
            )
            self._sweeper.start()

    async def _start_change_notices(self) -> None:
        """Committed events ring their inbox; on PostgreSQL, notices reach other processes."""
        s = self.settings
        self._relay = asyncio.create_task(relay_events(self.bus, self.changes), name="changes")
        if not self.db.is_sqlite:
            config = NotifyConfig(s.change_notify_retry_max, s.change_notify_keepalive)
            self._notifier = ChangeNotifier(listen_dsn(s.sqlalchemy_url), self.changes, config)
            await self._notifier.start()

    def _tls(self) -> ServerCertificate:
        """The certificate every TLS listener serves (one, shared, reloadable)."""
        if self.tls is None:
            s = self.settings
            files: tuple[Path, Path]
            if s.tls_cert_file is not None and s.tls_key_file is not None:
                files = s.tls_cert_file, s.tls_key_file
            else:
                files = self_signed(s.data_dir, s.hostname)
            self.tls = ServerCertificate(*files, check_interval=s.tls_reload_interval)
        return self.tls

    def reload_tls(self) -> bool:
        """Load the certificate and key files again for new connections (SIGHUP).

        True if they were loaded; an invalid pair is logged and the previous one kept.
        """
        if self.tls is None:
            log.info("event=tls_reload_skipped reason=no_tls_listener")
            return False
        return self.tls.reload()

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

    def _start_outbound(self) -> None:
        """The DKIM signer and the queue worker with its transport."""
        s = self.settings
        assert self.resolver is not None
        self.signer = DkimSigner(self.db, self.clock)
        self.outbox = OutboxWriter(
            self.db,
            self.blobs,
            max_age=timedelta(seconds=s.outbound_max_age),
            batch_size=s.ingest_batch_size,
        )
        self.outbox.start()
        if self.transport is None:
            self.transport = outbound_transport(s, self.resolver, self.mta_sts)
        config = WorkerConfig(
            hostname=s.hostname,
            concurrency=s.outbound_concurrency,
            batch_size=s.outbound_batch_size,
            lease=s.outbound_lease,
            poll_interval=s.outbound_poll_interval,
            exclusive=self.db.is_sqlite,
            policy=RetryPolicy(s.outbound_retry_first, s.outbound_retry_max),
        )
        self.outbound = QueueWorker(
            self.db,
            self.blobs,
            self.bus,
            self.clock,
            self.transport,
            config,
            changes=self.changes,
            recipients=self.recipients,
        )
        self.outbound.start()
        if s.outbound_retention_days:
            self.retention = RetentionJob(
                self.db,
                self.blobs,
                self.clock,
                days=s.outbound_retention_days,
                interval=s.outbound_retention_interval,
            )
            self.retention.start()

    def _send_context(self) -> SendContext:
        s = self.settings
        assert self.signer is not None and self.outbox is not None
        return SendContext(
            self.signer,
            self.outbox,
            self.offload,
            max_recipients=s.send_max_recipients,
            queued=self._queued,
            scheduled=self._scheduled,
            max_schedule=timedelta(days=s.draft_schedule_max_days),
        )

    def _start_drafts(self) -> None:
        """The scheduler of drafts with a send_at."""
        s = self.settings
        config = SchedulerConfig(
            poll_interval=s.draft_poll_interval,
            lease=s.draft_claim_lease,
            exclusive=self.db.is_sqlite,
        )
        self.drafts = DraftScheduler(self.db, self.blobs, self.clock, self._send_context(), config)
        self.drafts.start()

    def _scheduled(self) -> None:
        if self.drafts is not None:
            self.drafts.wake()

    def _routing_changed(self) -> None:
        """A catch-all or a sender rule changed: forget what the MX cached about them."""
        if self.recipients is not None:
            self.recipients.forget()
        if self.senders is not None:
            self.senders.forget()

    def _queued(self, inbox_id: str) -> None:
        """A message was queued from ``inbox_id``: deliver it now, and tell IMAP (Sent)."""
        if self.outbound is not None:
            self.outbound.wake()
        self.changes.notify(inbox_id)

    async def _start_submission(self) -> None:
        s = self.settings
        assert self.signer is not None and self.outbox is not None
        context = self._tls().context
        handler = SubmissionHandler(
            self.db,
            self.outbox,
            self.clock,
            self.signer,
            SubmissionConfig(
                hostname=s.hostname,
                max_recipients=s.send_max_recipients,
                auth_failure_delay=s.submission_auth_failure_delay,
            ),
            AuthThrottle(s.submission_max_auth_failures, s.submission_auth_failure_window),
            self.offload,
            on_queued=self._queued,
        )
        limits = MxLimits(
            max_message_size=s.smtp_max_message_size,
            max_recipients=s.send_max_recipients,
            max_line_length=s.smtp_max_line_length,
            timeout=s.smtp_timeout,
        )
        self._submission_limiter = limiter = ConnectionLimiter(
            s.smtp_max_connections, s.smtp_max_connections_per_ip
        )
        loop = asyncio.get_running_loop()
        for name, port, implicit in (
            ("submission", s.submission_port, False),
            ("submissions", s.submissions_port, True),
        ):
            if not port:
                continue
            server = await loop.create_server(
                partial(
                    SubmissionServer,
                    handler,
                    limiter,
                    limits,
                    hostname=s.hostname,
                    tls_context=context,
                    implicit_tls=implicit,
                ),
                sock=listen_socket(s.bind, port),
                ssl=context if implicit else None,
            )
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    async def _start_mx(self) -> None:
        s = self.settings
        assert self._pipeline is not None
        context = self._tls().context
        handler = MxHandler(
            self.db,
            self._pipeline,
            self.clock,
            self.offload,
            hostname=s.hostname,
            max_recipients=s.smtp_max_recipients,
            verify=self._verifier(),
            dmarc_reject=s.dmarc_reject,
            recipients=self.recipients,
            senders=self.senders,
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
            tls_context=self._tls().context,
            allow_plaintext=s.plaintext_allowed,
            offload=self.offload,
        )
        self._imap = ImapServer(services)
        for name, port, implicit_tls in (
            ("imap", s.imap_port, False),
            ("imaps", s.imaps_port, True),
        ):
            if port:
                sock = listen_socket(s.bind, port)
                self.ports[name] = await self._imap.listen(sock, implicit_tls=implicit_tls)

    async def _start_webhooks(self) -> None:
        """The webhook dispatcher, with its own HTTP client (no redirects, no proxies)."""
        s = self.settings
        self._webhook_client = httpx.AsyncClient(
            timeout=httpx.Timeout(s.webhook_timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=s.webhook_concurrency),
            headers={"user-agent": USER_AGENT},
        )
        self.webhooks = Dispatcher(
            self.db,
            self.bus,
            self._webhook_client,
            self.blobs,
            clock=self.clock,
            resolver=self.resolver,
            config=DispatchConfig(
                timeout=s.webhook_timeout,
                concurrency=s.webhook_concurrency,
                poll_interval=s.event_poll_interval,
                allow_private_targets=s.webhook_allow_private_targets,
                payload=payload_limits(s),
            ),
        )
        await self.webhooks.start()

    async def _start_http(self) -> None:
        s = self.settings
        self._api = ApiContext(
            db=self.db,
            blobs=self.blobs,
            clock=self.clock,
            config=api_config(s),
            changes=self.changes,
            bus=self.bus,
            resolver=self.resolver,
            mta_sts=self.mta_sts,
            profile=partial(DomainProfile.from_settings, s),
            events=events_config(s),
            dispatcher=self.webhooks,
            routing_changed=self._routing_changed,
        )
        app = create_app(self._api)
        app.state.send = self._send_context()
        self._sns_client = sns_client(s)
        policy = SnsPolicy(cert_hosts=s.sns_hosts, topic_arns=s.sns_topics)
        app.state.sns = FeedbackContext(SnsVerifier(self._sns_client, policy))
        self._billing = app.state.billing = billing_context(s)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            forwarded_allow_ips=s.http_trusted_proxies,
        )
        self._http = uvicorn.Server(config)
        self._http_socket = sock = listen_socket(s.bind, s.http_port)
        # Server.serve() would take over SIGINT/SIGTERM, which the CLI handles for every
        # listener, so its steps are run here without the signal capture.
        config.load()
        self._http.lifespan = config.lifespan_class(config)
        await self._http.startup(sockets=[sock])
        self._http_task = asyncio.create_task(self._http.main_loop(), name="http")
        self._counters_task = asyncio.create_task(
            keep_counters_flushed(self._api), name="api-counters"
        )
        self.ports["http"] = self._http_socket.getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, let sessions finish (up to the grace period), flush, close."""
        for server in self._servers:  # first, before anything awaits: no new sessions
            server.close()
        if self.rechecker is not None:
            await self.rechecker.stop()
        if self._sweeper is not None:
            await self._sweeper.stop()
        if self._limiter is not None:
            await self._limiter.drain(self.settings.shutdown_grace)
        if self._submission_limiter is not None:
            await self._submission_limiter.drain(self.settings.shutdown_grace)
        if self._api is not None:
            self._api.closing.set()  # event streams and waits end
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
            await self._http.shutdown(sockets=[self._http_socket] if self._http_socket else None)
        await stop_tasks(self._counters_task)  # it flushes once more as it stops
        if self._imap is not None:
            await self._imap.stop(self.settings.shutdown_grace)
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self.drafts is not None:
            await self.drafts.stop()  # before the outbox writer it queues through
        if self.outbox is not None:
            await self.outbox.stop()
        if self.outbound is not None:
            await self.outbound.stop(self.settings.shutdown_grace)
        if self.retention is not None:
            await self.retention.stop()
        if self._sns_client is not None:
            await self._sns_client.aclose()
        if self._billing is not None:
            await self._billing.close()
        if self.webhooks is not None:
            await self.webhooks.stop(
                min(self.settings.shutdown_grace, self.settings.webhook_timeout)
            )
        if self._webhook_client is not None:
            await self._webhook_client.aclose()
        if self.mta_sts is not None:
            await self.mta_sts.close()
        await stop_tasks(self._relay)
        if self._notifier is not None:
            await self._notifier.stop()
        if hasattr(self, "blobs"):  # not when start failed before it
            await self.blobs.close()
        await self.offload.close()
        await self.db.close()
        log.info("event=stopped")
