"""SMTP replies, named once: basic code (RFC 5321 §4.2) plus enhanced code (RFC 3463).

aiosmtpd's own replies carry no enhanced codes; :func:`with_enhanced_code` adds them so that every
reply after EHLO does, as ENHANCEDSTATUSCODES (RFC 2034 §3) promises. The greeting, 334 and 354
intermediate replies and the EHLO/HELO/HELP lines are left as they are.
"""

from __future__ import annotations

import re

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailboxkit.store.db import storage_full
from mailboxkit.store.quota import SendQuotaExceeded, StorageQuotaExceeded

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
BYE = "221 2.0.0 Bye"
NO_SUCH_MAILBOX = "550 5.1.1 Recipient address rejected: no such mailbox here"
RELAY_DENIED = "550 5.7.1 Relaying denied: this server accepts mail only for its own domains"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
MESSAGE_TOO_BIG = "552 5.3.4 Message too big for system"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
TEMPORARY_FAILURE = "451 4.3.0 Temporary server error, try again later"
STORAGE_FULL = "452 4.3.1 Insufficient system storage, try again later"
# RFC 3463 X.2.2 "mailbox full": temporary (4xx), so the sender retries once mail is deleted.
MAILBOX_FULL = "452 4.2.2 Mailbox full: over its storage quota, try again later"
# RFC 3463 X.7.1 "delivery not authorized, message refused" (a policy), with a temporary basic
# code (RFC 5321 §4.2.1: 4yz, "the error condition is temporary"): the limit ends at the next
# UTC day. Not X.5.3, which is "too many recipients" in one transaction, nor X.2.2, which is
# about the recipient's mailbox.
SEND_LIMIT_REACHED = "451 4.7.1 Daily sending limit reached, try again after 00:00 UTC"
DMARC_REJECTED = (
    "550 5.7.1 Message rejected: it fails the DMARC policy (p=reject) of its From domain"
)
SENDER_BLOCKED = "550 5.7.1 Sender address rejected: blocked by the recipient"
BAD_SENDER = "553 5.1.7 Sender address syntax is invalid"
BAD_RECIPIENT = "553 5.1.3 Recipient address syntax is invalid"
RECIPIENT_SUPPRESSED = (
    "550 5.7.1 Recipient address rejected: it is on this account's suppression list "
    "(it bounced or complained)"
)


def ehlo_lines(responses: list[str]) -> list[str]:
    """aiosmtpd's EHLO reply plus PIPELINING (RFC 2920) and ENHANCEDSTATUSCODES (RFC 2034),
    inserted before the final line."""
    return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]


class Ehlo:
    """The EHLO hook of our aiosmtpd handlers: keeps the client's name, adds the extensions."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return ehlo_lines(responses)


def failed(error: BaseException | None) -> str:
    """The reply to a message that could not be stored: a quota, the disk full, or another
    failure."""
    if isinstance(error, StorageQuotaExceeded):
        return MAILBOX_FULL
    if isinstance(error, SendQuotaExceeded):
        return SEND_LIMIT_REACHED
    return STORAGE_FULL if storage_full(error) else TEMPORARY_FAILURE


def queued(queue_id: str) -> str:
    return f"250 2.0.0 OK: queued as {queue_id}"


_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}( |$)")

# Replies of aiosmtpd (matched by prefix) that deserve more than their class's default.
_KNOWN: tuple[tuple[str, str], ...] = (
    ("250 OK", OK),
    ("221 Bye", BYE),
    ("552 Error: Too much mail data", MESSAGE_TOO_BIG),
    ("552 Error: message size exceeds", "552 5.3.4 Message size exceeds fixed maximum size"),
    ("500 Line too long", "500 5.5.2 Line too long"),
    ("500 Command line too long", "500 5.5.2 Command line too long"),
    ("530 Must issue a STARTTLS", "530 5.7.0 Must issue a STARTTLS command first"),
    ("554 Command refused due to lack of security", "554 5.7.0 Must issue STARTTLS first"),
    ("454 TLS not available", "454 4.7.0 TLS not available"),
)

_DEFAULT_BY_CODE = {
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def with_enhanced_code(reply: str) -> str:
    """Add an enhanced status code to a final reply that lacks one."""
    if _HAS_ENHANCED.match(reply):
        return reply
    for prefix, replacement in _KNOWN:
        if reply.startswith(prefix):
            return replacement
    code, sep, text = reply.partition(" ")
    enhanced = _DEFAULT_BY_CODE.get(code)
    if enhanced is None or sep != " ":
        return reply
    return f"{code} {enhanced} {text}"
