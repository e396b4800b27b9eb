"""SMTP submission (RFC 6409): port 587 with STARTTLS (RFC 3207), port 465 with implicit TLS
(RFC 8314), for agents and mail clients sending as their inbox.

Implementation notes (checked in this order):

- TLS first. On 587 AUTH before STARTTLS is refused with 538 5.7.11 (RFC 4954 §6) and is not
  even advertised; MAIL before AUTH gets 530 5.7.0. On 465 the connection is TLS from the start.
- AUTH PLAIN (RFC 4616) and LOGIN: the user name is an inbox address, the password an API key
  of that inbox or of its account (``imap.auth.check_credentials``: a key of another inbox or
  account fails exactly like a wrong one). Failures are delayed and counted per client address;
  past the limit, 454 4.7.0 without checking. AUTH data is never logged.
- MAIL FROM must be the authenticated inbox (plus-tags allowed), else 553 5.7.1; at most
  ``max_recipients`` RCPTs (452 4.5.3). Recipients may be anywhere: this is submission, not
  relay, because the sender is authenticated. A recipient on the account's suppression list
  (``store.suppressions``) is refused at RCPT with 550 5.7.1 (the others are still taken).
- DATA: every From address must be the inbox's (553 5.7.1, RFC 6409 §8 lets us refuse). The
  message is completed as RFC 6409 §8 allows: Date and Message-ID added when missing. Then it
  is DKIM-signed, stored in Sent and queued (``store.outbox.submit``); 250 comes only after
  that commit. Bcc stays in the Sent copy, as the sender wrote it; the queue worker removes it
  from every copy that goes out (DKIM never signs Bcc, so the signatures still hold).
- The account's daily send limit (``store.quota``): MAIL is refused once it is reached, and
  the message is counted when it is queued (a race past MAIL is refused at end of data), with
  ``451 4.7.1``: temporary (the count starts again at 00:00 UTC), a policy refusal (RFC 3463
  X.7.1), not "too many recipients" (X.5.3) nor the recipient's mailbox (X.2.2).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, getaddresses

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from mailboxkit import metrics
from mailboxkit.dns.signing import DkimSigner
from mailboxkit.mailserver import replies
from mailboxkit.mailserver.imap.auth import AuthThrottle, check_credentials, parse_plain
from mailboxkit.mailserver.imap.state import User
from mailboxkit.mailserver.smtp import ConnectionLimiter, MxLimits, MxServer
from mailboxkit.store import outbox, quota, suppressions
from mailboxkit.store.accounts import Inbox, split_address
from mailboxkit.store.charsets import raw_header
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database, log_failure
from mailboxkit.store.ids import new_id
from mailboxkit.store.mime import parse_message
from mailboxkit.store.offload import Offload
from mailboxkit.store.rawheaders import field_name, header_fields

log = logging.getLogger(__name__)

SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by the authenticated inbox"
FROM_NOT_OWNED = "553 5.7.1 From address rejected: not owned by the authenticated inbox"
NO_FROM = "550 5.6.0 The message has no From address"
TOO_MANY_FAILURES = "454 4.7.0 Too many failed authentications; try again later"
BAD_AUTH_DATA = "501 5.5.2 Cannot decode the authentication data"


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    hostname: str
    max_recipients: int
    auth_failure_delay: float


def from_addresses(raw: bytes) -> list[str]:
    """Every address of every From field (RFC 5322 §3.6.2)."""
    fields, _ = header_fields(raw)
    values = [
        raw_header(f.split(b":", 1)[1].decode("utf-8", "surrogateescape"))
        for f in fields
        if field_name(f) == "from"
    ]
    return [email for _, email in getaddresses(values) if email]


def complete_message(raw: bytes, *, domain: str, now: datetime) -> bytes:
    """Date and Message-ID added when missing (RFC 6409 §8.2, §8.3); everything else is left
    byte-exact. Bcc stays, for the Sent copy: the queue worker removes it from what goes out."""
    fields, rest = header_fields(raw)
    names = {field_name(f) for f in fields}
    added = []
    if "date" not in names:
        added.append(f"Date: {format_datetime(now)}\r\n".encode("ascii"))
    if "message-id" not in names:
        added.append(f"Message-ID: <{new_id()}@{domain}>\r\n".encode("ascii"))
    if not added:
        return raw
    return b"".join([*added, *fields]) + (rest or b"\r\n")


class SubmissionHandler(replies.Ehlo):
    """aiosmtpd hooks for submission: AUTH, sender checks, then sign, store, queue."""

    def __init__(
        self,
        db: Database,
        writer: outbox.OutboxWriter,
        clock: Clock,
        signer: DkimSigner,
        config: SubmissionConfig,
        throttle: AuthThrottle,
        offload: Offload,
        on_queued: Callable[[str], None] = lambda _inbox_id: None,
    ) -> None:
        self._db = db
        self._offload = offload
        self._outbox = writer
        self._clock = clock
        self._signer = signer
        self._config = config
        self._throttle = throttle
        self._on_queued = on_queued

    # AUTH (RFC 4954), replacing aiosmtpd's built-in mechanisms so the check can be async.

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            data = await server.challenge_auth("")
            if data is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                data = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await server.push(BAD_AUTH_DATA)
                return AuthResult(success=False, handled=True)
        assert isinstance(data, bytes)
        credentials = parse_plain(data)
        if credentials is None:
            await server.push(BAD_AUTH_DATA)
            return AuthResult(success=False, handled=True)
        return await self._check(server, *credentials)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
        else:
            try:
                login = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await server.push(BAD_AUTH_DATA)
                return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        try:
            return await self._check(server, login.decode(), password.decode())
        except UnicodeDecodeError:
            return await self._check(server, "", "")

    async def _check(self, server: SMTP, username: str, secret: str) -> AuthResult:
        assert server.session is not None
        ip = _peer_ip(server.session)
        if self._throttle.blocked(ip):
            log.info("event=submission_auth_blocked peer=%s", ip)
            return AuthResult(success=False, handled=False, message=TOO_MANY_FAILURES)
        user = await check_credentials(self._db, self._clock, username, secret)
        if user is None:
            self._throttle.failed(ip)
            log.info("event=submission_auth_failed peer=%s", ip)
            await asyncio.sleep(self._config.auth_failure_delay)
            return AuthResult(success=False, handled=False)
        log.info("event=submission_auth peer=%s inbox_id=%s", ip, user.inbox_id)
        return AuthResult(success=True, auth_data=user)

    # The transaction.

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        user = session.auth_data
        assert isinstance(user, User)
        if not address or split_address(address) != split_address(user.address):
            log.info("event=submission_sender_refused inbox_id=%s", user.inbox_id)
            return SENDER_NOT_OWNED
        async with self._db.read() as conn:
            may_send = await quota.may_send(conn, user.account_id, now=self._clock.now())
        if not may_send:  # early; counted for good when the message is queued
            log.info("event=submission_over_quota inbox_id=%s", user.inbox_id)
            return replies.SEND_LIMIT_REACHED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self._config.max_recipients:
            metrics.SMTP_RECIPIENTS_REFUSED.labels("submission", "limit").inc()
            return replies.TOO_MANY_RECIPIENTS
        local, _, domain = address.rpartition("@")
        if not local or not domain or any(c.isspace() for c in address):
            metrics.SMTP_RECIPIENTS_REFUSED.labels("submission", "invalid").inc()
            return replies.BAD_RECIPIENT
        user = session.auth_data
        assert isinstance(user, User)
        async with self._db.read() as conn:
            listed = await suppressions.suppressed(conn, user.account_id, [address])
        if listed:
            log.info("event=submission_recipient_suppressed inbox_id=%s", user.inbox_id)
            metrics.SMTP_RECIPIENTS_REFUSED.labels("submission", "suppressed").inc()
            return replies.RECIPIENT_SUPPRESSED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = session.auth_data
        assert isinstance(user, User)
        assert isinstance(envelope.original_content, bytes)
        raw = envelope.original_content
        senders = from_addresses(raw)
        if not senders:
            return NO_FROM
        own = split_address(user.address)
        if any(split_address(a) != own for a in senders):
            log.info("event=submission_from_refused inbox_id=%s", user.inbox_id)
            return FROM_NOT_OWNED
        now = self._clock.now()
        domain = own[1]
        try:
            signed = await self._signer.sign(complete_message(raw, domain=domain, now=now), domain)
            queued = await self._outbox.submit(
                outbox.Outgoing(
                    inbox=Inbox(user.inbox_id, user.account_id, user.address, ""),
                    raw=signed,
                    parsed=await self._offload.run(len(signed), parse_message, signed),
                    envelope_from=envelope.mail_from or user.address,
                    recipients=tuple(envelope.rcpt_tos),
                ),
                now=now,
            )
        except quota.SendQuotaExceeded as refused:
            log.info("event=submission_over_quota inbox_id=%s", user.inbox_id)
            return replies.failed(refused)
        except Exception as error:
            log_failure(log, error, "event=submission_queue_failed inbox_id=%s", user.inbox_id)
            return replies.failed(error)
        self._on_queued(user.inbox_id)
        log.info(
            "event=submitted queue_id=%s inbox_id=%s rcpts=%d size=%d",
            queued.queue_id,
            user.inbox_id,
            len(envelope.rcpt_tos),
            len(signed),
        )
        return replies.queued(queued.queue_id)

    async def handle_exception(self, error: Exception) -> str:
        log_failure(log, error, "event=submission_session_error")
        return replies.failed(error)


def _peer_ip(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)


class SubmissionServer(MxServer):
    """One submission session: the MX session's limits and reply codes, plus AUTH.

    ``tls_context`` is offered through STARTTLS (587); for implicit TLS (465) the listening
    socket does the TLS and ``implicit_tls`` says that AUTH is allowed straight away.
    """

    listener = "submission"  # the label of its metrics (DATA is counted by MxServer's)

    def __init__(
        self,
        handler: SubmissionHandler,
        limiter: ConnectionLimiter,
        limits: MxLimits,
        *,
        hostname: str,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool = False,
    ) -> None:
        self.line_length_limit = limits.max_line_length
        SMTP.__init__(
            self,
            handler,
            data_size_limit=limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="MailboxKit ESMTP submission",
            tls_context=None if implicit_tls else tls_context,
            require_starttls=False,
            auth_required=True,
            auth_require_tls=True,
            timeout=limits.timeout,
            loop=asyncio.get_running_loop(),
        )
        if implicit_tls:
            # The socket is TLS from the first byte; aiosmtpd only knows STARTTLS as TLS.
            self._auth_require_tls = False
        self._limiter = limiter
        self._slot = None
        self._refused = False
