"""Settings: one frozen object read from ``MAILBOXKIT_*`` variables and an optional TOML file.

Precedence, highest first: keyword arguments, environment variables, the TOML file
(``MAILBOXKIT_CONFIG_FILE`` or ``mailboxkit --config FILE``), the defaults below.
Every field is documented in ``docs/config.md``; keep the two in step. The sending fields (the
outbound transport, submission, the queue, smarthost, SES and SNS) are declared in
``sending_settings.py``, and the billing fields (Stripe, plans) in ``billing_settings.py``: bases
of :class:`Settings`.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailboxkit.billing_settings import BillingSettings, PlanLimits
from mailboxkit.sending_settings import SendingSettings

Port = int  # 0 means "do not listen"

LOOPBACK_BINDS = frozenset({"127.0.0.1", "::1", "localhost"})


class Settings(BaseSettings, SendingSettings, BillingSettings):
    """Everything an operator can set. Instances are frozen; build one with :meth:`load`."""

    model_config = SettingsConfigDict(
        env_prefix="MAILBOXKIT_",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        env_ignore_empty=True,
        hide_input_in_errors=True,  # a refused value may be a secret (a key, a password)
    )

    # Where things live.
    data_dir: Path = Field(
        Path("data"),
        description="Directory for the SQLite database, blobs, generated keys and certificates.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL. Empty: SQLite file mailboxkit.db in the data dir. "
        "postgresql://user:pass@host/db for production.",
    )
    blob_url: str = Field(
        "",
        description="Blob store: empty for DATA_DIR/blobs, a directory path or file:///path, "
        "or s3://bucket/prefix (with S3_ENDPOINT_URL for R2/MinIO).",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (R2, MinIO).")
    s3_region: str | None = Field(None, description="S3 region; the AWS chain's default if unset.")

    # Identity.
    hostname: str = Field(
        default_factory=socket.getfqdn,
        description="This server's host name: SMTP greeting, Received headers, MX target.",
    )
    domain: str = Field("localhost", description="Default domain for new inboxes.")
    public_url: str = Field(
        "",
        description="Base URL clients reach the HTTP server at, used in signed download URLs. "
        "Empty: http://HOSTNAME:HTTP_PORT.",
    )
    secret_key: str = Field(
        "",
        description="Secret for signed URLs. Empty: generated once into DATA_DIR/secret.key.",
    )

    # Listeners.
    bind: str = Field("127.0.0.1", description="Address every listener binds to.")
    smtp_port: Port = Field(2525, ge=0, le=65535, description="MX receiver (production: 25).")
    submission_port: Port = Field(
        2587, ge=0, le=65535, description="Submission, STARTTLS (production: 587)."
    )
    submissions_port: Port = Field(
        2465, ge=0, le=65535, description="Submission, implicit TLS (production: 465)."
    )
    imap_port: Port = Field(1143, ge=0, le=65535, description="IMAP, STARTTLS (production: 143).")
    imaps_port: Port = Field(
        1993, ge=0, le=65535, description="IMAP, implicit TLS (production: 993)."
    )
    http_port: Port = Field(8025, ge=0, le=65535, description="HTTP API (production: behind TLS).")

    # TLS.
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain.")
    tls_key_file: Path | None = Field(None, description="PEM private key.")
    tls_reload_interval: float = Field(
        5,
        ge=0,
        description="Seconds between looks, made as TLS connections start, at whether the "
        "certificate or key file changed; a changed valid pair serves new connections. "
        "SIGHUP reloads at once. 0: only SIGHUP.",
    )

    # DNS and inbound authentication.
    dns_nameservers: str = Field(
        "",
        description="Resolvers to ask, as host[:port] separated by commas. Empty: the system's "
        "(/etc/resolv.conf).",
    )
    dns_timeout: float = Field(5, gt=0, description="Seconds before a DNS query gives up.")
    verify_inbound: bool = Field(
        True,
        description="Check SPF, DKIM, DMARC and the peer's reverse DNS of mail received by the "
        "MX (results in an Authentication-Results header and the API). False: no DNS lookups "
        "on the MX path and no verdicts.",
    )
    dmarc_reject: bool = Field(
        True,
        description="Refuse (550 5.7.1) mail that fails DMARC of a domain publishing p=reject. "
        "False: file it in Junk instead.",
    )
    dns_recheck_interval: float = Field(
        21600,
        ge=0,
        description="Seconds between re-checks of the DNS records of every verified domain; a "
        "domain whose required records broke is marked failing and its account told "
        "(domain.verification_failed). 0: no re-checks.",
    )
    postmaster: str = Field(
        "",
        description="The inbox (an address on this server) that receives postmaster@ mail of a "
        "domain with neither a postmaster inbox nor a catch-all. Empty: the oldest inbox of the "
        "domain's account; postmaster@ the operator's domains is then refused.",
    )

    # The DNS records each domain publishes (`mailboxkit dns records`); the outbound transport
    # and the SES settings (SendingSettings) shape them too.
    dmarc_rua: str = Field(
        "",
        description="Address DMARC aggregate reports are sent to (rua). Empty: "
        "dmarc-reports@DOMAIN for each domain.",
    )
    tlsrpt_rua: str = Field(
        "",
        description="Address SMTP TLS reports (RFC 8460) are sent to. Empty: "
        "tls-reports@DOMAIN for each domain.",
    )
    mta_sts_mode: Literal["enforce", "testing", "none"] = Field(
        "testing",
        description="MTA-STS policy mode (RFC 8461). Start with testing; enforce once TLS-RPT "
        "reports are clean.",
    )
    mta_sts_max_age: int = Field(
        604800,
        ge=86400,
        le=31557600,
        description="Seconds senders may cache the MTA-STS policy (RFC 8461 §3.2).",
    )
    dns_record_ttl: int = Field(
        3600, ge=60, le=604800, description="TTL, in seconds, of the DNS records printed."
    )

    # SMTP limits.
    smtp_max_message_size: int = Field(
        25 * 1024 * 1024, gt=0, description="Largest message accepted, in bytes (SIZE)."
    )
    smtp_max_recipients: int = Field(100, gt=0, description="RCPT commands per transaction.")
    smtp_max_line_length: int = Field(
        8192,
        ge=1001,
        description="Longest command or DATA line in bytes, its CRLF not counted. RFC 5321 "
        "§4.5.3.1.6 says 1000, but real senders exceed it, so the default is lenient.",
    )
    smtp_timeout: float = Field(300, gt=0, description="Idle seconds before a session is closed.")
    smtp_max_connections: int = Field(1000, gt=0, description="Concurrent SMTP sessions.")
    smtp_max_connections_per_ip: int = Field(
        100, gt=0, description="Concurrent SMTP sessions from one client address."
    )

    # IMAP limits.
    imap_max_line_length: int = Field(
        65536,
        ge=1000,
        description="Longest IMAP command line in bytes, CRLF and literals excluded "
        "(long UID sets need more than RFC 3501's suggested 1000).",
    )
    imap_max_literal_size: int = Field(
        25 * 1024 * 1024,
        gt=0,
        description="Largest IMAP literal in bytes, so the largest APPENDed message; "
        "advertised as APPENDLIMIT (RFC 7889).",
    )
    imap_max_command_size: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest IMAP command in bytes, lines and literals together (a MULTIAPPEND).",
    )
    imap_login_timeout: float = Field(
        60, gt=0, description="Seconds an IMAP connection may wait before logging in."
    )
    imap_idle_timeout: float = Field(
        1800,
        ge=1740,
        description="Seconds an authenticated IMAP session may stay silent, IDLE included. "
        "RFC 3501 asks for at least 30 minutes; clients renew IDLE every 29.",
    )
    imap_max_connections: int = Field(1000, gt=0, description="Concurrent IMAP sessions.")
    imap_max_connections_per_ip: int = Field(
        50, gt=0, description="Concurrent IMAP sessions from one client address."
    )
    imap_auth_failure_delay: float = Field(
        2.0, ge=0, description="Seconds before a failed IMAP login is answered."
    )
    imap_max_auth_failures: int = Field(
        10,
        gt=0,
        description="Failed IMAP logins from one client address within "
        "IMAP_AUTH_FAILURE_WINDOW before its further attempts are refused.",
    )
    imap_auth_failure_window: float = Field(
        900, gt=0, description="Seconds over which failed IMAP logins are counted."
    )

    # Change notices between server processes (PostgreSQL LISTEN/NOTIFY; IMAP IDLE).
    change_notify_retry_max: float = Field(
        30,
        gt=0,
        description="Most seconds between attempts to reopen the PostgreSQL connection that "
        "carries mailbox change notices between server processes (backoff from 0.1).",
    )
    change_notify_keepalive: float = Field(
        30,
        gt=0,
        description="Seconds without traffic before that connection is checked; also its "
        "connect and query timeout.",
    )

    # Delivery pipeline.
    ingest_batch_size: int = Field(
        64, gt=0, description="Most messages committed together (group commit)."
    )
    offload_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes that parse and compose messages over 64 KiB, off the "
        "event loop; started when the first such message comes (0: one per CPU core but one, "
        "at least 1 and at most 4).",
    )

    # Store sweep: messages in no folder, and blobs no row refers to.
    store_sweep_interval: float = Field(
        6 * 3600,
        ge=0,
        description="Seconds between passes of the store sweep, which deletes messages left in "
        "no folder and blobs no message, attachment or queued message refers to (0: no sweep; "
        "`mailboxkit store sweep` runs one pass). On PostgreSQL one process sweeps at a time.",
    )
    store_sweep_message_grace: int = Field(
        3600,
        ge=0,
        description="Seconds after it was received before a message in no folder is deleted.",
    )
    store_sweep_blob_grace: int = Field(
        24 * 3600,
        ge=3600,
        description="Seconds after it was written before a blob no row refers to is deleted; at "
        "least an hour, as a batch writes its blobs before it commits the rows that refer to them.",
    )

    # HTTP API.
    registration_enabled: bool = Field(
        False,
        description="Let anyone create an account and inbox with POST /api/v1/register.",
    )
    registration_limit_per_ip: int = Field(
        5, ge=0, description="Registrations per client address per hour (0: unlimited)."
    )
    registration_limit_per_email: int = Field(
        3, ge=0, description="Registrations per owner email per hour (0: unlimited)."
    )

    # Quotas of new accounts (``mailboxkit account limits`` changes an account's).
    default_storage_quota: int | None = Field(
        None,
        ge=0,
        description="Bytes of stored mail a new account may keep (each copy in a folder "
        "counts); past it, inbound mail is deferred with 452 4.2.2 and IMAP APPEND and COPY "
        "get NO [OVERQUOTA]. Unset: unlimited.",
    )
    default_inbox_limit: int | None = Field(
        None, ge=0, description="Inboxes a new account may have. Unset: unlimited."
    )
    default_daily_send_limit: int | None = Field(
        None,
        ge=0,
        description="Messages a new account may send per UTC day (API and submission, each "
        "message once whatever its recipients). Unset: unlimited.",
    )
    api_rate_limit: int = Field(
        600, ge=0, description="API requests per key per minute (0: unlimited)."
    )
    api_key_cache_seconds: float = Field(
        5,
        ge=0,
        description="Seconds a process keeps an API key it has checked before reading it again "
        "(0: read it on every request). A key revoked through this process stops at once; "
        "through another process sharing the database, within this time.",
    )
    api_max_auth_failures: int = Field(
        20,
        ge=0,
        description="Failed API authentications (401) from one client address (IPv6: its /64) "
        "within API_AUTH_FAILURE_WINDOW; after that every API request from it, valid keys "
        "included, gets 429 until the window ends (0: unlimited).",
    )
    api_auth_failure_window: int = Field(
        300, gt=0, description="Seconds over which failed API authentications are counted."
    )
    http_trusted_proxies: str = Field(
        "127.0.0.1,::1",
        description="Reverse proxies whose X-Forwarded-For (the client address per-address "
        "limits count) and X-Forwarded-Proto are believed: addresses or networks separated by "
        "commas, * for any. Other peers are the client themselves.",
    )
    api_max_body_size: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest HTTP request body accepted, in bytes."
    )
    download_url_ttl: int = Field(
        3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds an attachment download URL works when the client names none.",
    )
    metrics_token: str = Field(
        "",
        description="Token a Prometheus scraper sends to GET /metrics on the HTTP port, as "
        "Authorization: Bearer TOKEN. Empty: /metrics answers 404 (metrics off).",
    )
    console: bool = Field(
        True,
        description="Serve the web console at /console on the HTTP port (sign-in with an "
        "account API key). false: /console answers 404.",
    )

    # Events: webhooks, the live stream and waits.
    webhook_allow_private_targets: bool = Field(
        False,
        description="Let webhook URLs reach private, loopback and link-local addresses "
        "(development only: otherwise such URLs are refused, when created and at each request).",
    )
    webhook_timeout: float = Field(
        15, gt=0, le=300, description="Seconds one webhook request may take in all."
    )
    webhook_concurrency: int = Field(
        32, gt=0, description="Webhook requests in flight at once, per server process."
    )
    event_poll_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between looks at the event table for what other server processes "
        "wrote (webhooks, streams, waits) and for webhook retries that fell due.",
    )
    event_max_payload_size: int = Field(
        256 * 1024,
        ge=4096,
        description="Largest event body in bytes (webhook, stream); longer fields are cut and "
        "the event points at the API for the whole message.",
    )
    event_wait_max_timeout: float = Field(
        300, gt=0, description="Most seconds a request to wait for a message is held."
    )
    event_stream_keepalive: float = Field(
        15, gt=0, description="Seconds between keep-alive comments on an idle event stream."
    )

    # Process.
    migrate_on_start: bool = Field(True, description="Run database migrations when serving.")
    shutdown_grace: float = Field(
        30, ge=0, description="Seconds SIGTERM waits for sessions in flight before closing."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    @field_validator("domain", "hostname")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().rstrip(".").lower()

    @field_validator("postmaster")
    @classmethod
    def _postmaster(cls, value: str) -> str:
        value = value.strip().lower()
        local, at, domain = value.rpartition("@")
        if value and (not at or not local or not domain or any(c in value for c in " ,;<>")):
            raise ValueError("must be one inbox address such as postmaster@example.com")
        return value

    @field_validator("dmarc_rua", "tlsrpt_rua")
    @classmethod
    def _report_address(cls, value: str) -> str:
        value = value.strip().removeprefix("mailto:")
        if value and ("@" not in value or any(c in value for c in " ,;!")):
            raise ValueError("must be one email address such as reports@example.com")
        return value

    @field_validator("http_trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return "*"
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.0/8), or *"
                ) from None
        return ",".join(items)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: str) -> str:
        if not all("!" <= c <= "~" for c in value):
            raise ValueError(
                "must be printable ASCII without spaces (it is sent in an HTTP header), "
                "e.g. from `openssl rand -hex 32`"
            )
        return value

    @model_validator(mode="after")
    def _check_imap_sizes(self) -> Settings:
        if self.imap_max_command_size < self.imap_max_literal_size:
            raise ValueError(
                "MAILBOXKIT_IMAP_MAX_COMMAND_SIZE must be at least MAILBOXKIT_IMAP_MAX_LITERAL_SIZE"
            )
        return self

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "set both MAILBOXKIT_TLS_CERT_FILE and MAILBOXKIT_TLS_KEY_FILE, or neither "
                "(a self-signed certificate is then generated)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read the environment and, when given, a TOML file of the same field names."""
        if config_file is None:
            return cls(**overrides)
        if not config_file.is_file():
            raise ValueError(f"config file {config_file} does not exist")
        config = {**cls.model_config, "toml_file": config_file}
        bound = type(cls.__name__, (cls,), {"model_config": config})
        return bound(**overrides)  # type: ignore[no-any-return]

    # Derived values.

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the async driver the store uses."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'mailboxkit.db').resolve()}"
        for plain, driver in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def nameservers(self) -> list[str] | None:
        """The configured resolvers, or None for the system's."""
        found = [n for n in self.dns_nameservers.replace(",", " ").split() if n]
        return found or None

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.hostname}:{self.http_port}").rstrip("/")

    def new_account_limits(self) -> PlanLimits:
        """The limits a new account starts with: with billing on, the free plan's when one is
        set (a new account has no subscription yet); else ``DEFAULT_*``."""
        if self.stripe_secret_key and self.billing_free_plan is not None:
            return self.billing_free_plan
        return PlanLimits(
            storage_quota=self.default_storage_quota,
            inbox_limit=self.default_inbox_limit,
            daily_send_limit=self.default_daily_send_limit,
        )

    @property
    def plaintext_allowed(self) -> bool:
        """Whether the listeners only face this machine (development)."""
        return self.bind in LOOPBACK_BINDS
