"""Delivery status notifications (RFC 3464): structure, fields, and hostile diagnostics."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import Message

from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.mailserver.outbound.dsn import FailedRecipient, build_report, original_header
from mailboxkit.mailserver.outbound.transport import (
    Accepted,
    PermanentFailure,
    TemporaryFailure,
    classify,
    status_code,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ORIGINAL = (
    b"From: bot@example.test\r\nTo: a@remote.test\r\nSubject: Hi\r\n"
    b"Message-ID: <m1@example.test>\r\n\r\nsecret body\r\n"
)


def report(*failures: FailedRecipient, original: bytes = ORIGINAL) -> Message:
    raw = build_report(
        reporting_mta="mx.example.test",
        postmaster="MAILER-DAEMON@mx.example.test",
        recipient="bot@example.test",
        original=original,
        failures=failures,
        arrival=NOW,
        now=NOW,
        original_message_id="m1@example.test",
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    return email.message_from_bytes(raw)


def test_report_has_the_three_parts_and_the_fields() -> None:
    dsn = report(
        FailedRecipient("a@remote.test", "5.1.1", "550 5.1.1 no such user", "mx.remote.test"),
        FailedRecipient("b@remote.test", "4.4.7", "delivery time expired", "", from_remote=False),
    )
    assert dsn["In-Reply-To"] == "<m1@example.test>"
    assert dsn["References"] == "<m1@example.test>"
    assert dsn.get_content_type() == "multipart/report"
    human, status, headers = dsn.get_payload()
    assert "a@remote.test" in human.get_payload()
    per_message, first, second = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert first["Final-Recipient"] == "rfc822; a@remote.test"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx.remote.test"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert second["Status"] == "4.4.7"
    assert second["Remote-MTA"] is None
    assert second["Diagnostic-Code"] == "x-mailboxkit; delivery time expired"
    assert headers.get_content_type() == "text/rfc822-headers"
    text = headers.get_payload()
    assert "Message-ID: <m1@example.test>" in text
    assert "secret body" not in text  # never the original's body


@given(diagnostic=st.text(max_size=300), remote=st.text(max_size=50))
def test_hostile_diagnostics_cannot_add_fields_or_lines(diagnostic: str, remote: str) -> None:
    dsn = report(FailedRecipient("a@remote.test", "5.0.0", diagnostic, remote))
    _, status, _ = dsn.get_payload()
    fields = [k.lower() for block in status.get_payload() for k in block]
    assert fields.count("diagnostic-code") == 1
    assert "x-injected" not in fields


def test_original_header_is_capped_and_keeps_crlf() -> None:
    assert original_header(ORIGINAL).endswith(b"Message-ID: <m1@example.test>\r\n")
    assert original_header(b"A: b\nC: d\n\nbody") == b"A: b\r\nC: d\r\n"
    assert len(original_header(b"X: " + b"y" * 200_000)) < 70_000


def test_replies_are_classified_by_their_class() -> None:
    assert classify(250, "OK") == Accepted("250 OK")
    assert classify(451, "4.3.0  try\r\nlater", "mx") == TemporaryFailure(
        "451 4.3.0 try later", "mx"
    )
    assert classify(550, "5.1.1 nope") == PermanentFailure("550 5.1.1 nope")
    assert classify(421, "bye") == TemporaryFailure("421 bye")


def test_status_codes_come_from_the_reply_or_its_class() -> None:
    assert status_code("550 5.1.1 no such user", permanent=True) == "5.1.1"
    assert status_code("554 transaction failed", permanent=True) == "5.0.0"
    assert status_code("weird", permanent=True) == "5.0.0"
    assert status_code("451 later", permanent=False) == "4.0.0"
