"""Delivery status notifications (RFC 3464) for mail that could not be delivered. Pure.

The report is a ``multipart/report; report-type=delivery-status`` (RFC 6522) of three parts: a
human-readable explanation, the ``message/delivery-status`` fields (per-message, then one block
per recipient: Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, RFC 3464 §2.2-2.3),
and the original message's header (``text/rfc822-headers``), never its body.

It is filed straight into the sender's INBOX, so it has no envelope; it says
``Auto-Submitted: auto-replied`` (RFC 3834 §5) and refers to the original message with
In-Reply-To and References, so it joins the original's thread.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

MAX_ORIGINAL_HEADER = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    recipient: str
    status: str  # the enhanced status code, e.g. "5.1.1" (RFC 3463)
    diagnostic: str  # the remote reply, or why we gave up
    remote: str = ""  # the host that answered, "" when none did
    from_remote: bool = True  # the diagnostic is an SMTP reply (else our own text)


def original_header(raw: bytes) -> bytes:
    """The header section of ``raw`` (without the empty line), capped, with CRLF endings."""
    found = _HEADER_END.search(raw, 0, MAX_ORIGINAL_HEADER + 4)
    head = raw[: found.start()] if found else raw[:MAX_ORIGINAL_HEADER]
    return re.sub(rb"\r?\n", b"\r\n", head) + b"\r\n"


def _field(text: str) -> str:
    """A value safe on one line of a report."""
    return " ".join(_CONTROL.sub(" ", text).split())[:900]


def _xtext_address(address: str) -> str:
    """``rfc822; address``: an address type and the address (RFC 3464 §2.1.2), ASCII."""
    return "rfc822; " + _field(address).encode("ascii", "backslashreplace").decode("ascii")


def build_report(
    *,
    reporting_mta: str,
    postmaster: str,
    recipient: str,
    original: bytes,
    failures: Sequence[FailedRecipient],
    arrival: datetime,
    now: datetime,
    original_message_id: str | None,
) -> bytes:
    """The bytes of a DSN telling ``recipient`` (the sender) about ``failures``."""
    boundary = f"=_dsn_{secrets.token_hex(12)}"
    lines = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{_field(recipient)}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{secrets.token_hex(16)}@{reporting_mta}>",
    ]
    if original_message_id:
        lines += [f"In-Reply-To: <{original_message_id}>", f"References: <{original_message_id}>"]
    lines += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a delivery status notification in MIME format (RFC 3464).",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to the following recipients:",
        "",
    ]
    for failure in failures:
        where = f" (from {_field(failure.remote)})" if failure.remote else ""
        lines += [f"  {_field(failure.recipient)}", f"    {_field(failure.diagnostic)}{where}", ""]
    lines += [
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {format_datetime(arrival)}",
    ]
    for failure in failures:
        lines += ["", f"Final-Recipient: {_xtext_address(failure.recipient)}"]
        lines += ["Action: failed", f"Status: {failure.status}"]
        if failure.remote:
            lines.append(f"Remote-MTA: dns; {_field(failure.remote)}")
        kind = "smtp" if failure.from_remote else "x-mailboxkit"
        lines.append(f"Diagnostic-Code: {kind}; {_field(failure.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {format_datetime(now)}")
    header = original_header(original)
    encoding = "7bit" if header.isascii() else "8bit"
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        f"Content-Transfer-Encoding: {encoding}",
        "",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8")  # ends with the part's empty line
    return head + header + f"\r\n--{boundary}--\r\n".encode("ascii")
