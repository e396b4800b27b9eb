"""Components built from Settings, for the composition root (``app.py``) and the CLI.

Each function turns the settings of one component into the component or its config: the blob
store and its signing secret, the HTTP API's and the events' configs, the outbound transport
and its TLS and MTA-STS parts, the SNS client, a listening socket. They build; starting,
running and stopping is ``app.py``'s.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
from datetime import timedelta

import httpx

from mailboxkit.api.app import ApiConfig
from mailboxkit.api.billing import BillingContext
from mailboxkit.api.context import EventsConfig
from mailboxkit.api.dispatcher import USER_AGENT
from mailboxkit.api.payloads import PayloadLimits
from mailboxkit.config import Settings
from mailboxkit.dns.mtasts import MtaStsPolicies, PolicyFetcher, policy_client
from mailboxkit.dns.resolver import Resolver
from mailboxkit.mailserver.outbound.mx import MxTransport
from mailboxkit.mailserver.outbound.smarthost import SmarthostTransport
from mailboxkit.mailserver.outbound.smtpclient import SmtpClientPool, TlsMode
from mailboxkit.mailserver.outbound.transport import Transport
from mailboxkit.store.billing import Catalog, Plan
from mailboxkit.store.blobs import BlobStore, open_blob_store
from mailboxkit.store.clock import Clock, SystemClock
from mailboxkit.store.quota import Limits
from mailboxkit.store.ratelimit import Limit
from mailboxkit.store.sweep import SweepPolicy


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


def sweep_policy(settings: Settings) -> SweepPolicy:
    return SweepPolicy(
        message_grace=timedelta(seconds=settings.store_sweep_message_grace),
        blob_grace=timedelta(seconds=settings.store_sweep_blob_grace),
    )


def api_config(settings: Settings) -> ApiConfig:
    """The settings the HTTP API enforces."""
    return ApiConfig(
        domain=settings.domain,
        registration_enabled=settings.registration_enabled,
        registration_per_ip=Limit(settings.registration_limit_per_ip, 3600),
        registration_per_email=Limit(settings.registration_limit_per_email, 3600),
        requests_per_key=Limit(settings.api_rate_limit, 60),
        key_cache_seconds=settings.api_key_cache_seconds,
        auth_failures_per_ip=Limit(
            settings.api_max_auth_failures, settings.api_auth_failure_window
        ),
        max_body_size=settings.api_max_body_size,
        download_url_ttl=settings.download_url_ttl,
        metrics_token=settings.metrics_token,
        account_limits=Limits.of(settings.new_account_limits()),
        console=settings.console,
        secret_key=secret_key(settings),
    )


def billing_context(settings: Settings) -> BillingContext | None:
    """Stripe billing with its own client (the caller closes it), or None when it is off."""
    s = settings
    if not s.stripe_secret_key:
        return None
    import stripe  # with billing on only: see api/billing.py

    http = stripe.HTTPXClient(timeout=s.stripe_timeout)
    client = stripe.StripeClient(
        s.stripe_secret_key,
        base_addresses={"api": s.stripe_api_base},
        http_client=http,
        max_network_retries=2,  # POSTs carry idempotency keys: retries are safe
    )
    plans = tuple(
        Plan(name, plan.price_id, Limits.of(plan)) for name, plan in s.billing_plans.items()
    )
    free = Limits.of(s.new_account_limits())  # the free plan's, else DEFAULT_*
    return BillingContext(client, http, Catalog(plans, free), s.stripe_webhook_secret)


def outbound_tls_context(settings: Settings) -> ssl.SSLContext:
    """The context outbound TLS is verified with: the system's CAs and the operator's extra."""
    context = ssl.create_default_context()
    if settings.outbound_tls_ca_file is not None:
        context.load_verify_locations(cafile=settings.outbound_tls_ca_file)
    return context


def mta_sts_fetcher(settings: Settings, resolver: Resolver) -> PolicyFetcher:
    """Fetches MTA-STS policies (recipient domains', and ours for the DNS check)."""
    s = settings
    client = policy_client(s.outbound_mta_sts_timeout, s.outbound_tls_ca_file)
    return PolicyFetcher(
        resolver, client, port=s.outbound_mta_sts_port, timeout=s.outbound_mta_sts_timeout
    )


def outbound_transport(
    settings: Settings, resolver: Resolver, mta_sts: PolicyFetcher | None = None
) -> Transport:
    """The transport outbound mail leaves through (``outbound_transport``); direct MX delivery
    honours MTA-STS when given a fetcher (whose client its caller closes)."""
    s = settings
    if s.outbound_transport == "ses":
        from mailboxkit.mailserver.outbound.ses import SesTransport, ses_client  # boto3 if used

        return SesTransport(
            ses_client(s.ses_region, s.ses_endpoint_url),
            configuration_set=s.ses_configuration_set,
        )
    pool = SmtpClientPool(
        helo=s.hostname,
        timeout=s.outbound_timeout,
        verified_context=outbound_tls_context(s),
        max_idle=s.outbound_concurrency,
    )
    if s.outbound_transport == "smarthost":
        tls = {"starttls": TlsMode.STARTTLS, "implicit": TlsMode.IMPLICIT, "none": TlsMode.NONE}
        return SmarthostTransport(
            pool,
            host=s.smarthost_host,
            port=s.smarthost_port,
            tls=tls[s.smarthost_tls],
            username=s.smarthost_username,
            password=s.smarthost_password,
        )
    policies = MtaStsPolicies(resolver, mta_sts) if mta_sts is not None else None
    return MxTransport(resolver, pool, port=s.outbound_mx_port, policies=policies)


def payload_limits(settings: Settings) -> PayloadLimits:
    return PayloadLimits(
        base_url=settings.base_url,
        max_size=settings.event_max_payload_size,
        url_ttl=settings.download_url_ttl,
    )


def events_config(settings: Settings) -> EventsConfig:
    """The settings of webhooks, the live stream and waits, as the API takes them."""
    return EventsConfig(
        poll_interval=settings.event_poll_interval,
        wait_max_timeout=settings.event_wait_max_timeout,
        stream_keepalive=settings.event_stream_keepalive,
        allow_private_targets=settings.webhook_allow_private_targets,
        payload=payload_limits(settings),
    )


def sns_client(settings: Settings) -> httpx.AsyncClient:
    """The client that fetches SNS signing certificates and subscription URLs."""
    context = ssl.create_default_context()
    if settings.sns_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.sns_ca_file))
    return httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(settings.sns_timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP;
    # with Nagle on, pipelined SMTP replies meet delayed ACKs and each message stalls 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
