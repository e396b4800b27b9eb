"""The SMTP MX receiver (port 25) on aiosmtpd, running on the server's own event loop.

Implementation notes (checked in this order, RFC 5321 §3.3):

- RCPT: too many recipients → 452 4.5.3; a domain that is not ours → 550 5.7.1 (never an open
  relay); an unknown mailbox → 550 5.1.1 at RCPT time, so we never accept-then-bounce
  (no backscatter). ``name+tag@domain`` delivers to ``name@domain``; a local part without an
  inbox goes to the domain's catch-all, and ``postmaster@`` is always accepted (RFC 5321 §4.5.1;
  the order is in :mod:`.recipients`). An envelope sender the recipient's account blocks → 550
  5.7.1 for that recipient. Several RCPTs that reach one inbox store the message once there.
- DATA is read by :mod:`.smtpdata` (aiosmtpd's DATA command with a reader that takes a buffer
  at a time, not a line): data ends only at CRLF.CRLF and bare CR/LF (``\\n.\\n``,
  ``\\r.\\r\\n``...) stay inside the message, so no second message can be smuggled in. Size
  (552 5.3.4) and line length (500 5.5.2) are enforced while reading. A ``Received:`` trace
  header is prepended (RFC 5321 §4.4). The reply is 250 only after the delivery pipeline has
  made the message durable.
- After DATA, when checks are on: SPF, DKIM and DMARC (``dns.inbound``). DMARC ``reject`` fails
  are refused with 550 5.7.1 (unless the operator files them in Junk), ``quarantine`` fails go to
  Junk, and an ``Authentication-Results`` header (RFC 8601) is prepended above ``Received``. The
  event says what an agent should make of the message: ``message.received.spam`` (Junk),
  ``message.received.unauthenticated`` (DMARC did not pass), else ``message.received``.
- Then each inbox's sender rules (``store.senderrules``), on the From address, else the envelope
  sender: blocked → Junk (``message.received.spam``), even with checks off; allowed → INBOX and
  ``message.received`` whatever DMARC said (the verdicts and the header are kept). A DMARC
  ``reject`` refusal is one reply for every recipient and is not lifted by an allow rule.
- Every final reply carries an enhanced status code (RFC 2034), see :mod:`.replies`.
- Unexpected errors are logged once with the session's peer and answered 451 4.3.0; the server
  stays up. The database out of reach is one warning line, without the traceback; a full disk
  (blobs or database) is answered 452 4.3.1 (RFC 3463 "mail system full"), also temporary.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr  # what aiosmtpd uses
from email.utils import format_datetime
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException

from mailboxkit import metrics
from mailboxkit.dns.authresults import AuthVerdicts, authentication_results, strip_forged
from mailboxkit.dns.dmarc import Disposition, DmarcVerdict
from mailboxkit.mailserver import replies
from mailboxkit.mailserver.delivery import (
    DeliveryFailed,
    DeliveryPipeline,
    Inbound,
    Placement,
    new_queue_id,
)
from mailboxkit.mailserver.recipients import POSTMASTER, RecipientDirectory, Refusal
from mailboxkit.mailserver.senders import SenderPolicy
from mailboxkit.mailserver.smtpdata import read_data
from mailboxkit.store import quota
from mailboxkit.store.accounts import Inbox, split_address
from mailboxkit.store.clock import Clock
from mailboxkit.store.db import Database, log_failure
from mailboxkit.store.events import EventType
from mailboxkit.store.mime import ParsedMessage, parse_message
from mailboxkit.store.offload import Offload
from mailboxkit.store.senderrules import RuleAction

log = logging.getLogger(__name__)

UNLIMITED_TTL = 10.0  # seconds an account seen without a storage limit is taken to have none
UNLIMITED_REMEMBERED = 10_000  # such accounts remembered at most


@dataclass(slots=True)
class ConnectionLimiter:
    """Counts sessions, in all and per client address."""

    max_total: int
    max_per_ip: int
    total: int = 0
    per_ip: Counter[str] = field(default_factory=Counter)
    sessions: set[MxServer] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False  # shutting down: no new transaction starts

    def __post_init__(self) -> None:
        self.idle.set()

    def acquire(self, ip: str) -> bool:
        if self.total >= self.max_total or self.per_ip[ip] >= self.max_per_ip:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        self.idle.clear()
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
        if self.total == 0:
            self.idle.set()

    async def drain(self, grace: float) -> None:
        """Close idle sessions with 421 now; let transactions in flight finish (a new MAIL gets
        421) for up to ``grace`` seconds, then close the rest with 421."""
        self.draining = True
        for session in tuple(self.sessions):
            if not session.in_transaction:
                session.close_for_shutdown()
        try:
            await asyncio.wait_for(self.idle.wait(), grace)
        except TimeoutError:
            for session in tuple(self.sessions):
                session.close_for_shutdown()


class MxEnvelope(Envelope):
    """aiosmtpd's envelope plus the inboxes that RCPT resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.inboxes: dict[str, tuple[Inbox, list[str]]] = {}


@dataclass(frozen=True, slots=True)
class MxLimits:
    max_message_size: int
    max_recipients: int
    max_line_length: int
    timeout: float


class Verifier(Protocol):
    """Inbound authentication of one message: ``dns.inbound.verify_inbound`` with a resolver."""

    async def __call__(
        self, message: bytes, *, ip: str, mail_from: str, helo: str
    ) -> AuthVerdicts: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where a message goes and what is said about it, from its authentication results (for
    an inbox without a sender rule on it)."""

    header: bytes
    folder: str
    event: EventType
    auth: dict[str, Any] | None
    refuse: bool
    peer_name: str | None = None  # forward-confirmed reverse DNS of the peer


class MxHandler(replies.Ehlo):
    """aiosmtpd handler hooks for the MX receiver."""

    def __init__(
        self,
        db: Database,
        pipeline: DeliveryPipeline,
        clock: Clock,
        offload: Offload,
        *,
        hostname: str,
        max_recipients: int,
        verify: Verifier | None = None,
        dmarc_reject: bool = True,
        recipients: RecipientDirectory | None = None,
        senders: SenderPolicy | None = None,
    ) -> None:
        self._db = db
        self._recipients = recipients or RecipientDirectory(db)
        self._senders = senders or SenderPolicy(db)
        self._pipeline = pipeline
        self._clock = clock
        self._offload = offload
        self._hostname = hostname
        self._max_recipients = max_recipients
        self._verify = verify
        self._dmarc_reject = dmarc_reject
        self._unlimited: dict[str, float] = {}  # account id -> when seen without a limit

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # "<>" is the null reverse-path of bounces (RFC 5321 §4.5.5): kept as such, since
        # aiosmtpd takes an empty mail_from for "no MAIL yet"; see _reverse_path.
        if address and address != "<>" and "@" not in address:
            return replies.BAD_SENDER
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
        assert isinstance(envelope, MxEnvelope)
        if len(envelope.rcpt_tos) >= self._max_recipients:
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "limit").inc()
            return replies.TOO_MANY_RECIPIENTS
        local, domain = split_address(address)
        bare_postmaster = address.strip().lower() == POSTMASTER  # RFC 5321 §4.1.1.3
        if (not local or not domain) and not bare_postmaster:
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "invalid").inc()
            return replies.BAD_RECIPIENT
        inbox = await self._recipients.lookup(address)
        if inbox is Refusal.NOT_LOCAL:
            log.info("event=relay_denied peer=%s rcpt_domain=%s", session.peer, domain)
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "relay").inc()
            return replies.RELAY_DENIED
        if inbox is Refusal.UNKNOWN:
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "unknown").inc()
            return replies.NO_SUCH_MAILBOX
        sender = _reverse_path(envelope)
        if sender and await self._senders.decide(inbox, sender) is RuleAction.BLOCK:
            log.info(
                "event=sender_blocked peer=%s mail_from=%s inbox_id=%s",
                session.peer,
                sender,
                inbox.id,
            )
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "blocked").inc()
            return replies.SENDER_BLOCKED
        if not await self._has_room(inbox, envelope):
            log.info("event=rcpt_over_quota peer=%s inbox_id=%s", session.peer, inbox.id)
            metrics.SMTP_RECIPIENTS_REFUSED.labels("mx", "quota").inc()
            return replies.MAILBOX_FULL
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.inboxes.setdefault(inbox.id, (inbox, []))[1].append(address)
        return replies.RECIPIENT_OK

    async def _has_room(self, inbox: Inbox, envelope: Envelope) -> bool:
        """Whether the inbox's account has room for the message: for its declared SIZE
        (RFC 1870), else for one byte more. Checked again, locked, when it is stored.

        Most accounts have no limit: one seen without is not read again for
        ``UNLIMITED_TTL`` seconds (a limit set meanwhile applies here within that time, and
        when the message is stored at once)."""
        now = time.monotonic()
        if now - self._unlimited.get(inbox.account_id, -UNLIMITED_TTL) < UNLIMITED_TTL:
            return True
        async with self._db.read() as conn:
            found = await quota.storage(conn, inbox.account_id)
        if found is not None and found.limit is None:
            if len(self._unlimited) >= UNLIMITED_REMEMBERED:
                self._unlimited.clear()
            self._unlimited[inbox.account_id] = now
        return found is None or found.fits(max(1, _declared_size(envelope)))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope, MxEnvelope)
        assert isinstance(envelope.original_content, bytes)
        verdict = await self._authenticate(session, envelope)
        if verdict.refuse:
            log.info("event=dmarc_reject peer=%s mail_from=%s", session.peer, envelope.mail_from)
            return replies.DMARC_REJECTED
        now = self._clock.now()
        queue_id = new_queue_id()
        trace = verdict.header + self._received(session, envelope, queue_id, now, verdict)
        raw = trace + strip_forged(envelope.original_content, self._hostname)
        parsed = await self._offload.run(len(raw), parse_message, raw)
        inbound = Inbound(
            raw=raw,
            parsed=parsed,
            mail_from=_reverse_path(envelope),
            inboxes=await self._place(envelope, parsed, verdict),
            received_at=now,
            queue_id=queue_id,
            auth=verdict.auth,
        )
        try:
            await self._pipeline.deliver(inbound)
        except DeliveryFailed as failed:
            return replies.failed(failed.__cause__)
        log.info(
            "event=received queue_id=%s peer=%s size=%d rcpts=%d",
            queue_id,
            session.peer,
            len(raw),
            len(envelope.rcpt_tos),
        )
        return replies.queued(queue_id)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client gave up on the handshake (often: it does not trust our certificate).
            log.info("event=starttls_failed cause=%r", error.__cause__)
        else:
            log_failure(log, error, "event=smtp_session_error")
        return replies.failed(error)

    async def _place(
        self, envelope: MxEnvelope, parsed: ParsedMessage, verdict: Verdict
    ) -> list[Placement]:
        """Each inbox's folder and event: its sender rules, else the authentication verdict."""
        senders = [parsed.from_.email] if parsed.from_ is not None else []
        senders.append(_reverse_path(envelope))
        places = []
        for inbox, rcpts in envelope.inboxes.values():
            action = await self._senders.decide(inbox, *senders)
            if action is RuleAction.BLOCK:
                place = Placement(inbox, rcpts, "Junk", EventType.MESSAGE_RECEIVED_SPAM)
            elif action is RuleAction.ALLOW:
                place = Placement(inbox, rcpts, "INBOX", EventType.MESSAGE_RECEIVED)
            else:
                place = Placement(inbox, rcpts, verdict.folder, verdict.event)
            places.append(place)
        return places

    async def _authenticate(self, session: Session, envelope: Envelope) -> Verdict:
        if self._verify is None:
            return Verdict(b"", "INBOX", EventType.MESSAGE_RECEIVED, None, refuse=False)
        assert isinstance(envelope.original_content, bytes)
        verdicts = await self._verify(
            envelope.original_content,
            ip=_peer_ip(session),
            mail_from=_reverse_path(envelope),
            helo=session.host_name or "",
        )
        failed = verdicts.dmarc is not None and verdicts.dmarc.result is DmarcVerdict.FAIL
        junk = failed and verdicts.disposition in (Disposition.QUARANTINE, Disposition.REJECT)
        if junk:
            event = EventType.MESSAGE_RECEIVED_SPAM
        elif verdicts.dmarc is None or verdicts.dmarc.result is not DmarcVerdict.PASS:
            event = EventType.MESSAGE_RECEIVED_UNAUTHENTICATED
        else:
            event = EventType.MESSAGE_RECEIVED
        value = authentication_results(self._hostname, verdicts).replace("; ", ";\r\n\t")
        return Verdict(
            header=f"Authentication-Results: {value}\r\n".encode("utf-8", "surrogateescape"),
            folder="Junk" if junk else "INBOX",
            event=event,
            auth=verdicts.as_dict(),
            refuse=failed and verdicts.disposition is Disposition.REJECT and self._dmarc_reject,
            peer_name=verdicts.peer_name,
        )

    def _received(
        self, session: Session, envelope: Envelope, queue_id: str, now: Any, verdict: Verdict
    ) -> bytes:
        """The trace header (RFC 5321 §4.4), with the protocol keyword of RFC 3848/6531 and the
        peer's reverse name when DNS confirmed it (``from helo (name [ip])``)."""
        peer = f"[{_peer_ip(session)}]"
        if verdict.peer_name:
            peer = f"{verdict.peer_name} {peer}"
        proto = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP"
        if session.ssl is not None:
            proto += "S"
        helo = "".join(ch for ch in (session.host_name or "unknown") if ch.isprintable())[:255]
        recipient = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        header = (
            f"Received: from {helo} ({peer})\r\n\tby {self._hostname} (MailboxKit)"
            f" with {proto} id {queue_id}{recipient};\r\n\t{format_datetime(now)}\r\n"
        )
        return header.encode("utf-8", "surrogateescape")


def _reverse_path(envelope: Envelope) -> str:
    """The envelope sender; empty for the null reverse-path ``<>``."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def _peer_ip(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*+(?!\()"
)


def parse_path(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """The address of a MAIL or RCPT argument and the rest (its parameters), as aiosmtpd's
    ``SMTP._getaddr`` gives them: ``(None, None)`` when it does not parse (where aiosmtpd's
    crashes on some, and answers 500).

    aiosmtpd's version defines a ``typing.Protocol`` class on every call and runs the email
    package's full parser, about a tenth of the CPU an accepted message cost. A plain ASCII
    ``<local@domain>`` is read with one regex; anything else goes to the same parser.
    """
    if not arg:
        return "", ""
    plain = _PLAIN_PATH.match(arg)
    if plain is not None:
        addr, rest = plain.group(1), arg[plain.end() :]
    else:
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        try:
            address, rest = parse(arg)
            addr = address.addr_spec
        except Exception:  # HeaderParseError, and the parser's crashes on some garbage
            return None, None
    if local_part_limit and len(addr.rpartition("@")[0]) > local_part_limit:
        return None, None
    return addr, rest


class MxServer(SMTP):
    """One SMTP session: aiosmtpd plus enhanced codes, connection limits and our envelope."""

    listener = "mx"  # the label of its metrics

    def __init__(
        self,
        handler: MxHandler,
        limiter: ConnectionLimiter,
        limits: MxLimits,
        *,
        hostname: str,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        # aiosmtpd sizes its stream reader from this attribute in __init__.
        self.line_length_limit = limits.max_line_length
        super().__init__(
            handler,
            data_size_limit=limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="MailboxKit ESMTP",
            tls_context=tls_context,
            timeout=limits.timeout,
            loop=asyncio.get_running_loop(),
        )
        self._limiter = limiter
        self._slot: str | None = None
        self._refused = False

    def _create_envelope(self) -> MxEnvelope:
        return MxEnvelope()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return parse_path(arg, self.local_part_limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again on the TLS transport after STARTTLS: count the connection once.
        if self._slot is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else "unknown"
            if not self._limiter.acquire(ip):
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(replies.TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                return
            self._slot = ip
            self._limiter.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if self._slot is not None:
            self._limiter.release(self._slot)
            self._limiter.sessions.discard(self)
            self._slot = None
        super().connection_lost(exc)

    @property
    def in_transaction(self) -> bool:
        """Whether MAIL FROM was given and the transaction has not ended yet."""
        return self.envelope is not None and self.envelope.mail_from is not None

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._limiter.draining:  # between transactions while shutting down: end here
            self.close_for_shutdown()
            return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read by :func:`.smtpdata.read_data`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await read_data(
                self._reader,
                size_limit=self.data_size_limit or sys.maxsize,
                line_limit=self.line_length_limit,
            )
        except asyncio.CancelledError:  # the client closed the connection (eof_received)
            log.info("event=connection_lost_in_data peer=%s", self.session and self.session.peer)
            self._writer.close()
            raise
        if data.refusal is not None:
            metrics.smtp_message(self.listener, data.refusal.value)
            await self.push(data.refusal.value)
            self.envelope = self._create_envelope()
            return
        envelope.content = envelope.original_content = data.content
        try:
            status = await self._call_handler_hook("DATA")
        except Exception:
            metrics.smtp_message(self.listener, replies.TEMPORARY_FAILURE)  # as answered: 4xx
            raise
        self.envelope = self._create_envelope()
        reply = "250 OK" if status is MISSING else status
        metrics.smtp_message(self.listener, reply)
        await self.push(reply)

    def close_for_shutdown(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            transport.close()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(replies.with_enhanced_code(status))
        else:
            await super().push(status)


def _declared_size(envelope: Envelope) -> int:
    """The SIZE parameter of MAIL FROM (RFC 1870 §6), 0 when none."""
    for option in envelope.mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0
