"""The database schema, one table per noun, shared by SQLite and PostgreSQL.

Implementation notes (invariants the IMAP server and the API rely on):

- A *message* row is content: parsed headers, bodies, the blob key of its raw bytes. A message is
  shown in IMAP folders through *entries*; each entry has its own UID and MODSEQ and its own flags,
  as RFC 3501 §2.3 wants (a COPY is a new entry that may diverge). The API's read state and labels
  are the flags and keywords of a message's entries.
- UIDs are strictly increasing per folder: ``folders.uidnext`` is bumped in the same transaction
  that inserts the entry, and never reused while ``uidvalidity`` stays (RFC 3501 §2.3.1.1).
- MODSEQ (RFC 7162 §3.1) is per folder: ``folders.highestmodseq`` is bumped by every change to the
  folder's entries, and the entry takes the new value. Expunged UIDs are remembered in
  ``folder_expunges`` with the MODSEQ of their removal, for QRESYNC VANISHED (RFC 7162 §3.2.10).
- Threads are per inbox. ``thread_refs`` maps every Message-ID seen in an inbox (a message's own
  and those it references) to its thread, so a reply finds its thread even when its parent is
  missing or arrives later.
- Events are written in the transaction that causes them; ``seq`` orders them for resumable
  streams, ``id`` is the stable event id given to webhooks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

Id = String(36)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite keeps no zone, so we store UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # One call per value instead of the driver type's processor and then ours: listings
        # read two datetimes on every row. SQLite returns the text SQLAlchemy stored
        # ("YYYY-MM-DD HH:MM:SS.ffffff", in UTC); PostgreSQL drivers return datetimes.
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            found = datetime.fromisoformat(value)
            return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)

        return process


Timestamp = UtcDateTime()
# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for counters that grow.
Serial = BigInteger().with_variant(Integer(), "sqlite")


accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_email", String(320)),
    Column("status", String(20), nullable=False, server_default="active"),
    Column("password_hash", String(200)),
    Column("created_at", Timestamp, nullable=False),
    # Quotas (``store/quota.py``): NULL limits are unlimited. ``storage_used`` is the sum of
    # ``messages.size`` over the account's entries, changed in every transaction that adds or
    # removes entries.
    Column("storage_used", BigInteger, nullable=False, server_default="0"),
    Column("storage_limit", BigInteger),
    Column("inbox_limit", Integer),
    Column("daily_send_limit", Integer),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE")),
    Column("name", String(200), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Id, primary_key=True),
    # NULL: a domain of the operator's, shared by every account (the default domain).
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE")),
    Column("name", String(253), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("verified_at", Timestamp),  # when every required record was first right
    # Where mail for a local part without an inbox goes. No foreign key (inboxes already refer
    # to domains): lookups join the inbox, so a deleted one simply stops being the catch-all.
    Column("catch_all_inbox_id", Id),
    # The last DNS check (by the API or the periodic re-check), and since when the required
    # records of a verified domain have been broken (NULL: not broken).
    Column("dns_checked_at", Timestamp),
    Column("dns_failing_since", Timestamp),
)

# DKIM keys per domain (RFC 6376, RFC 8463). Every active key is published at
# <selector>._domainkey.<domain>; the newest active key of each algorithm signs. Rotation adds keys;
# old ones stay active (published) until removed, so mail in flight still verifies.
dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("domain_id", Id, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("selector", String(63), nullable=False),
    Column("algorithm", String(16), nullable=False),  # rsa | ed25519
    Column("private_key", Text, nullable=False),  # PKCS#8 PEM
    Column("public_txt", Text, nullable=False),  # the TXT value: v=DKIM1; k=...; p=...
    Column("created_at", Timestamp, nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_domain_selector"),
)

inboxes = Table(
    "inboxes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("domain_id", Id, ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    Column("local_part", String(64), nullable=False),
    # Lowercased local@domain; plus-tags are never part of it.
    Column("address", String(320), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_inboxes_account", "account_id"),
)

# Allow and block lists (``store/senderrules.py``): a sender address or a whole domain, for every
# inbox of an account or for one. The MX refuses a blocked envelope sender at RCPT and files a
# blocked From in Junk; an allowed sender is never filed in Junk by DMARC quarantine.
sender_rules = Table(
    "sender_rules",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE")),  # NULL: every inbox
    Column("action", String(8), nullable=False),  # allow | block
    Column("sender", String(320), nullable=False),  # an address or a domain, lower case
    Column("created_at", Timestamp, nullable=False),
    Index("ix_sender_rules_account", "account_id", "sender"),
)

folders = Table(
    "folders",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("special_use", String(20)),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False, server_default="1"),
    Column("highestmodseq", BigInteger, nullable=False, server_default="1"),
    Column("subscribed", Boolean, nullable=False, server_default="1"),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("inbox_id", "name", name="uq_folders_inbox_name"),
)

threads = Table(
    "threads",
    metadata,
    Column("id", Id, primary_key=True),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("normalized_subject", Text, nullable=False, server_default=""),
    Column("message_count", Integer, nullable=False, server_default="0"),
    Column("created_at", Timestamp, nullable=False),
    Column("last_message_at", Timestamp, nullable=False),
    Index("ix_threads_inbox_last", "inbox_id", "last_message_at"),
    Index("ix_threads_inbox_subject", "inbox_id", "normalized_subject"),
)

thread_refs = Table(
    "thread_refs",
    metadata,
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True),
    Column("message_id_header", String(998), primary_key=True),
    Column("thread_id", Id, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), nullable=False),
    Column("thread_id", Id, ForeignKey("threads.id", ondelete="SET NULL")),
    Column("direction", String(10), nullable=False),  # inbound | outbound
    Column("raw_key", String(512), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received_at", Timestamp, nullable=False),
    Column("envelope_from", String(320), nullable=False, server_default=""),
    Column("envelope_to", JSON, nullable=False, default=list),
    Column("message_id_header", String(998)),
    Column("in_reply_to", String(998)),
    Column("reference_ids", JSON, nullable=False, default=list),
    Column("subject", Text, nullable=False, server_default=""),
    Column("from_name", Text, nullable=False, server_default=""),
    Column("from_email", String(320), nullable=False, server_default=""),
    Column("to_addrs", JSON, nullable=False, default=list),
    Column("cc_addrs", JSON, nullable=False, default=list),
    Column("reply_to_addrs", JSON, nullable=False, default=list),
    Column("sent_at", Timestamp),
    Column("headers", JSON, nullable=False, default=list),
    Column("text", Text),
    Column("html", Text),
    Column("extracted_text", Text, nullable=False, server_default=""),
    Column("preview", Text, nullable=False, server_default=""),
    Column("has_attachments", Boolean, nullable=False, server_default="0"),
    Column("auth", JSON),
    Index("ix_messages_inbox_received", "inbox_id", "received_at", "id"),
    Index("ix_messages_thread", "thread_id", "received_at"),
    Index("ix_messages_inbox_msgid", "inbox_id", "message_id_header"),
    Index("ix_messages_raw_key", "raw_key"),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("folder_id", BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Column("internal_date", Timestamp, nullable=False),
    Column("seen", Boolean, nullable=False, server_default="0"),
    Column("answered", Boolean, nullable=False, server_default="0"),
    Column("flagged", Boolean, nullable=False, server_default="0"),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Column("draft", Boolean, nullable=False, server_default="0"),
    Column("keywords", JSON, nullable=False, default=list),
    UniqueConstraint("folder_id", "uid", name="uq_entries_folder_uid"),
    Index("ix_entries_folder_modseq", "folder_id", "modseq"),
    Index("ix_entries_message", "message_id"),
)

folder_expunges = Table(
    "folder_expunges",
    metadata,
    Column("folder_id", BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True),
    Column("uid", BigInteger, primary_key=True),
    Column("modseq", BigInteger, nullable=False),
    Index("ix_folder_expunges_modseq", "folder_id", "modseq"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Id, primary_key=True),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("filename", Text),
    Column("content_type", String(255), nullable=False),
    Column("disposition", String(20), nullable=False),
    Column("content_id", String(998)),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(512), nullable=False),
    Index("ix_attachments_message", "message_id", "position"),
    Index("ix_attachments_blob", "blob_key"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    # The client-made id is unique in every batch: SQLAlchemy uses it to match the seqs that
    # RETURNING gives back to the rows, so that a batch of events is one INSERT on SQLite too.
    Column("id", Id, nullable=False, unique=True, insert_sentinel=True),
    Column("type", String(64), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("inbox_id", Id),
    Column("message_id", Id),
    Column("payload", JSON, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_events_account_seq", "account_id", "seq"),
    # A seq is never handed out twice, even after the newest rows are deleted (readers resume
    # by seq). PostgreSQL's sequence already behaves so.
    sqlite_autoincrement=True,
)

# Fixed-window counters behind every rate limit (API keys, registration). ``bucket`` names what
# is limited ("key:<id>", "register-ip:<address>"); rows are purged once ``expires_at`` passes.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("bucket", String(400), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),  # Unix seconds
    Column("hits", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # Unix seconds
    Index("ix_rate_limits_expires", "expires_at"),
)

# Per-account, per-day API request counts for GET /api/v1/usage (messages are counted from
# ``events``, written in the transaction that stores them), and the messages queued for sending
# that day, which the daily send limit counts (``store/quota.py``).
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("api_requests", BigInteger, nullable=False, server_default="0"),
    Column("sends", BigInteger, nullable=False, server_default="0"),
)

# The outbound queue (``store/outbox.py``). One ``outbound_messages`` row per message sent (its
# raw bytes, already DKIM-signed, are the blob ``raw_key``, shared with the Sent copy
# ``message_id``); one ``outbound_recipients`` row per envelope recipient carries that
# recipient's delivery state. A worker claims due recipients by setting ``status='sending'``
# and ``lease_until``; a claim whose lease passed (its worker died) is due again.
outbound_messages = Table(
    "outbound_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Id),  # the Sent copy (no FK: expunging it does not stop delivery)
    Column("raw_key", String(512), nullable=False),
    Column("envelope_from", String(320), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),  # give up retrying after this
    # When the retention job dropped the queue's hold on the content (``store/retention.py``):
    # ``raw_key`` is then empty; the recipients' rows stay as the delivery log.
    Column("purged_at", Timestamp),
    Index("ix_outbound_messages_inbox", "inbox_id", "created_at"),
    Index("ix_outbound_messages_purge", "purged_at", "created_at"),
    Index("ix_outbound_messages_raw_key", "raw_key"),  # the store sweep's reference check
)

outbound_recipients = Table(
    "outbound_recipients",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column(
        "outbound_id",
        Id,
        ForeignKey("outbound_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("recipient", String(320), nullable=False),
    Column("domain", String(253), nullable=False),
    # queued | sending | sent | bounced, and after provider feedback: delivered | complained
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("lease_until", Timestamp),
    Column("last_reply", Text, nullable=False, server_default=""),
    Column("updated_at", Timestamp, nullable=False),
    # The id the transport gave the accepted message (SES's MessageId): how the provider's
    # bounce, complaint and delivery notifications find this row.
    Column("provider_message_id", String(255)),
    Index("ix_outbound_recipients_due", "status", "next_attempt_at"),
    Index("ix_outbound_recipients_outbound", "outbound_id"),
    Index("ix_outbound_recipients_provider", "provider_message_id"),
)

# Addresses an account does not send to (``store/suppressions.py``): added when they bounce
# permanently or complain, or by the account; sending to one is refused. ``address`` is
# lowercased. ``message_id`` is the Sent copy whose delivery caused it, if any.
suppressions = Table(
    "suppressions",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("reason", String(16), nullable=False),  # bounce | complaint | manual
    Column("detail", Text, nullable=False, server_default=""),
    Column("message_id", Id),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_suppressions_account_created", "account_id", "created_at", "address"),
)

# Idempotency keys of the send routes: the first request with a key is remembered with a hash of
# its body; a repeat with the same body gets the original answer and sends nothing, a repeat
# with another body is a conflict.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("message_id", Id, nullable=False),
    Column("thread_id", Id, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# Drafts (``store/drafts.py``): mail being written, made through the API or appended to the
# Drafts folder over IMAP. ``content`` holds the fields the draft is sent from (recipients,
# subject, bodies, extra headers, labels, threading ids, attachments by their blob's sha256).
# While unsent its copy is an entry in the inbox's Drafts folder with \Draft: ``entry_id``, and
# expunging that entry (an IMAP client deleting or replacing the draft) deletes the row. Sending
# clears ``entry_id`` and expunges the copy in the transaction that queues the message, with a
# conditional update on ``status`` and ``version``: a draft is queued at most once. ``status``:
# draft | scheduled (``send_at``) | sent | failed (a scheduled send that could not be queued:
# ``error``). ``claimed_until``: a scheduler process holds a due draft until then.
drafts = Table(
    "drafts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("inbox_id", Id, ForeignKey("inboxes.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("entry_id", BigInteger, ForeignKey("entries.id", ondelete="CASCADE")),
    Column("message_id", Id),  # the copy in Drafts (no FK: the entry's cascade decides)
    Column("reply_to_message_id", Id),  # the original of a reply draft: \Answered when sent
    Column("content", JSON, nullable=False),
    Column("send_at", Timestamp),
    Column("claimed_until", Timestamp),
    Column("error", Text),
    Column("sent_message_id", Id),  # the Sent copy
    Column("thread_id", Id),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("sent_at", Timestamp),
    Index("ix_drafts_inbox", "inbox_id", "created_at", "id"),
    Index("ix_drafts_account", "account_id", "created_at", "id"),
    Index("ix_drafts_due", "status", "send_at"),
    Index("ix_drafts_entry", "entry_id"),
)

# Webhooks (``store/webhooks.py``; their deliveries are made in ``store/webhook_dispatch.py``).
# An endpoint receives the events of its account whose type matches one of ``events`` (names or
# dot-boundary prefixes, "*" for all) and, when ``inbox_ids`` is set, whose inbox is one of
# them; only events after ``after_seq`` (the head of the outbox when it was made), so a new
# endpoint is not sent the past. ``secret`` signs
# (Standard Webhooks); after a rotation ``previous_secret`` also signs until it expires.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("events", JSON, nullable=False),
    Column("inbox_ids", JSON),  # NULL: every inbox of the account
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100)),
    Column("previous_secret_expires_at", Timestamp),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("disabled_reason", String(200)),
    Column("after_seq", BigInteger, nullable=False, server_default="0"),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_webhooks_account", "account_id", "id"),
)

# One row per (event, endpoint): the unit of at-least-once delivery. ``pending`` rows are due at
# ``next_attempt_at``; a worker claims one by moving ``next_attempt_at`` past its request's
# timeout and bumping ``attempts`` (the claim's token), so a claim whose worker died is due
# again. Test events have no outbox row: their payload is kept here.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("webhook_id", Id, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_seq", BigInteger, ForeignKey("events.seq", ondelete="CASCADE")),
    Column("event_id", Id, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSON),
    Column("status", String(16), nullable=False),  # pending | succeeded | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Timestamp),
    Column("last_attempt_at", Timestamp),
    Column("last_status_code", Integer),
    Column("last_error", String(500)),
    Column("delivered_at", Timestamp),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("webhook_id", "event_seq", name="uq_webhook_deliveries_webhook_event"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
)

# Every request made for a delivery: the delivery log.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column(
        "delivery_id", Id, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    ),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", Timestamp, nullable=False),
    Column("status_code", Integer),
    Column("error", String(500)),
    Column("response", Text, nullable=False, server_default=""),  # the start of the body
    Column("duration_ms", Integer, nullable=False, server_default="0"),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

# How far a consumer of the outbox has read, by ``events.seq``: ``webhooks`` is the fan-out of
# events to deliveries, shared by every server process (its row is locked while it moves).
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

# Stripe billing (``store/billing.py``): each account's Stripe customer, the subscriptions Stripe
# told us about with the time of the event their state came from, and the Stripe events applied.
billing_customers = Table(
    "billing_customers",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("customer_id", String(255), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
)

billing_subscriptions = Table(
    "billing_subscriptions",
    metadata,
    Column("subscription_id", String(255), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(32)),  # Stripe's; NULL: only known from a completed Checkout
    Column("price_id", String(255)),
    Column("current_period_end", Timestamp),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default="0"),
    Column("state_at", Timestamp),  # ``created`` of the Stripe event the state came from
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_billing_subscriptions_account", "account_id"),
)

billing_events = Table(
    "billing_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(100), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE")),
    Column("received_at", Timestamp, nullable=False),
    Index("ix_billing_events_account", "account_id"),
    Index("ix_billing_events_received", "received_at"),
)
