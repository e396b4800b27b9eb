"""Sending settings: the outbound transport, submission, scheduled drafts, the outbound queue, the
smarthost, SES and its SNS notifications, and how long sent messages are kept.

:class:`SendingSettings` is a base of :class:`mailboxkit.config.Settings`, the one frozen settings
object: every field here is a field of ``Settings``, read from ``MAILBOXKIT_<NAME>`` and the TOML
file like the others and documented in ``docs/config.md``. Build ``Settings``, never this class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class SendingSettings(BaseModel):
    """The outbound transport and everything about sending; part of ``Settings``."""

    model_config = ConfigDict(frozen=True)

    # The outbound transport; it also shapes each domain's SPF and SES MAIL FROM records.
    outbound_transport: Literal["mx", "smarthost", "ses"] = Field(
        "mx",
        description="How outbound mail leaves: mx (direct delivery from this host), smarthost "
        "(an SMTP relay) or ses (Amazon SES). ses adds include:amazonses.com to SPF.",
    )
    ses_region: str = Field(
        "us-east-1", description="Amazon SES region (the MX of an SES custom MAIL FROM domain)."
    )
    ses_mail_from_subdomain: str = Field(
        "",
        description="With SES: the label of a custom MAIL FROM domain under each domain (e.g. "
        "bounce gives bounce.DOMAIN), so SPF aligns for DMARC. Empty: SES's own domain.",
    )

    # Sending: submission, the outbound queue and its transports.
    send_max_recipients: int = Field(
        50,
        gt=0,
        description="Most recipients (To, Cc and Bcc together) of one message an inbox sends, "
        "over the API or SMTP submission.",
    )
    draft_poll_interval: float = Field(
        5,
        gt=0,
        description="Seconds between looks for due scheduled drafts when nothing wakes the "
        "scheduler (drafts scheduled through another server process).",
    )
    draft_claim_lease: float = Field(
        60,
        gt=0,
        description="Seconds a server process holds a due draft it is sending before another "
        "process may take it.",
    )
    draft_schedule_max_days: int = Field(
        365, gt=0, description="How many days ahead a draft's send_at may be."
    )
    submission_auth_failure_delay: float = Field(
        2.0, ge=0, description="Seconds before a failed submission AUTH is answered."
    )
    submission_max_auth_failures: int = Field(
        10,
        gt=0,
        description="Failed submission AUTHs from one client address within "
        "SUBMISSION_AUTH_FAILURE_WINDOW before its further attempts are refused.",
    )
    submission_auth_failure_window: float = Field(
        900, gt=0, description="Seconds over which failed submission AUTHs are counted."
    )
    outbound_max_age: int = Field(
        5 * 24 * 3600,
        ge=60,
        description="Seconds a message is retried before it bounces (RFC 5321 suggests 4-5 days).",
    )
    outbound_retry_first: float = Field(
        60, gt=0, description="Seconds before the first retry; each later one waits twice as long."
    )
    outbound_retry_max: float = Field(
        3600, gt=0, description="Longest wait, in seconds, between two delivery attempts."
    )
    outbound_concurrency: int = Field(
        20, gt=0, description="Deliveries in flight at once in this process."
    )
    outbound_batch_size: int = Field(
        100, gt=0, description="Most recipients the queue worker claims at a time."
    )
    outbound_lease: float = Field(
        900,
        gt=0,
        description="Seconds a worker holds the recipients it claimed; if it dies, another "
        "node delivers them after this (SQLite: at the next start).",
    )
    outbound_poll_interval: float = Field(
        5, gt=0, description="Seconds between looks at the queue when nothing wakes the worker."
    )
    outbound_timeout: float = Field(
        120, gt=0, description="Seconds the SMTP client waits for a reply before giving up."
    )
    outbound_mx_port: int = Field(
        25, ge=1, le=65535, description="Port direct MX delivery connects to (tests change it)."
    )
    outbound_mta_sts_port: int = Field(
        443,
        ge=1,
        le=65535,
        description="Port MTA-STS policies of recipient domains are fetched from (RFC 8461: "
        "443; tests and unusual setups change it).",
    )
    outbound_mta_sts_timeout: float = Field(
        10, gt=0, description="Seconds fetching one recipient domain's MTA-STS policy may take."
    )
    outbound_tls_ca_file: FilePath | None = Field(
        None,
        description="PEM file of extra CA certificates trusted, beside the system's, where "
        "outbound TLS is verified: MTA-STS policy hosts, MX hosts under an MTA-STS policy and "
        "the smarthost (for tests and private CAs). Unset: the system's only.",
    )
    smarthost_host: str = Field(
        "", description="With OUTBOUND_TRANSPORT=smarthost: the relay's host name."
    )
    smarthost_port: int = Field(587, ge=1, le=65535, description="The relay's port.")
    smarthost_tls: Literal["starttls", "implicit", "none"] = Field(
        "starttls",
        description="TLS to the relay: starttls (587), implicit (465), both verifying its "
        "certificate, or none (a relay on this host or network only).",
    )
    smarthost_username: str = Field("", description="User name for AUTH at the relay, if any.")
    smarthost_password: str = Field("", description="Password for AUTH at the relay.")
    ses_endpoint_url: str | None = Field(
        None, description="SES API endpoint; unset: the region's (set it for VPC endpoints)."
    )
    ses_configuration_set: str = Field(
        "", description="SES configuration set for sending events, if any."
    )
    sns_topic_arns: str = Field(
        "",
        description="SNS topics (ARNs separated by commas) whose messages POST "
        "/api/v1/ses/notifications accepts and whose subscriptions it confirms. Empty: any "
        "topic with a valid AWS signature; set it in production.",
    )
    sns_cert_hosts: str = Field(
        "",
        description="Exact host names SNS signing certificates and subscription URLs may come "
        "from (https only), separated by commas. Empty: sns.SES_REGION.amazonaws.com.",
    )
    sns_ca_file: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted, besides the system's, when fetching "
        "SNS certificates and subscription URLs (tests, TLS-inspecting proxies).",
    )
    sns_timeout: float = Field(
        10, gt=0, le=60, description="Seconds one such fetch may take in all."
    )
    outbound_retention_days: int = Field(
        30,
        ge=0,
        description="Days after a sent message's last recipient reached a final status "
        "(sent, delivered, bounced, complained) that the queue lets go of its content: the raw "
        "copy is deleted unless a message (the Sent copy, a local recipient's) still uses it. "
        "The delivery log stays. 0: keep it.",
    )
    outbound_retention_interval: float = Field(
        3600, gt=0, description="Seconds between two retention passes."
    )

    @field_validator("ses_mail_from_subdomain")
    @classmethod
    def _subdomain(cls, value: str) -> str:
        value = value.strip().strip(".").lower()
        if value and not all(_LABEL.fullmatch(label) for label in value.split(".")):
            raise ValueError("must be DNS labels such as 'bounce' (letters, digits, hyphens)")
        return value

    @field_validator("sns_cert_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        items = [item.strip().rstrip(".").lower() for item in value.split(",") if item.strip()]
        for item in items:
            if not all(_LABEL.fullmatch(label) for label in item.split(".")):
                raise ValueError(f"{item!r} is not a host name such as sns.us-east-1.amazonaws.com")
        return ",".join(items)

    @field_validator("sns_topic_arns")
    @classmethod
    def _topics(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            if not item.startswith("arn:") or any(c.isspace() for c in item):
                raise ValueError(f"{item!r} is not a topic ARN such as arn:aws:sns:REGION:ID:NAME")
        return ",".join(items)

    @field_validator("sns_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _check_smarthost(self) -> Self:
        if self.outbound_transport == "smarthost" and not self.smarthost_host:
            raise ValueError(
                "MAILBOXKIT_OUTBOUND_TRANSPORT=smarthost needs MAILBOXKIT_SMARTHOST_HOST "
                "(and usually MAILBOXKIT_SMARTHOST_USERNAME and MAILBOXKIT_SMARTHOST_PASSWORD)"
            )
        return self

    # Derived values.

    @property
    def sns_hosts(self) -> frozenset[str]:
        """Hosts SNS certificates and subscription URLs may come from."""
        found = [h for h in self.sns_cert_hosts.split(",") if h]
        return frozenset(found or [f"sns.{self.ses_region}.amazonaws.com"])

    @property
    def sns_topics(self) -> frozenset[str]:
        return frozenset(t for t in self.sns_topic_arns.split(",") if t)
