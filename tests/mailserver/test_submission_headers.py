"""Submission's header work, byte-exact: From addresses, Date/Message-ID added, and Bcc removed
from what goes out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailboxkit.mailserver.submission import complete_message, from_addresses
from mailboxkit.store.rawheaders import without_bcc

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"From: Bot <bot@example.test>\r\n\r\nx", ["bot@example.test"]),
        (b"From: a@x.test, b@y.test\r\n\r\n", ["a@x.test", "b@y.test"]),
        (b"From: =?utf-8?q?B=C3=B6t?=\r\n <bot@example.test>\r\n\r\n", ["bot@example.test"]),
        (b"FROM: one@x.test\r\nFrom: two@y.test\r\n\r\n", ["one@x.test", "two@y.test"]),
        ("From: Bót <bot@example.test>\r\n\r\n".encode(), ["bot@example.test"]),
        (b"Subject: none\r\n\r\nFrom: body@x.test\r\n", []),
    ],
)
def test_from_addresses(raw: bytes, expected: list[str]) -> None:
    assert from_addresses(raw) == expected


def test_missing_fields_are_added_and_the_rest_kept_byte_exact() -> None:
    raw = (
        b"From: bot@example.test\r\nBcc: a@x.test,\r\n b@x.test\r\nTo: c@x.test\r\n"
        b"\r\nBcc: stays in the body\r\n"
    )
    done = complete_message(raw, domain="example.test", now=NOW)
    head, body = done.split(b"\r\n\r\n", 1)
    assert body == b"Bcc: stays in the body\r\n"
    lines = head.split(b"\r\n")
    assert lines[0] == b"Date: Sat, 28 Nov 2026 09:00:00 +0000"
    assert lines[1].startswith(b"Message-ID: <") and lines[1].endswith(b"@example.test>")
    assert b"\r\n".join(lines[2:]) == raw.split(b"\r\n\r\n", 1)[0]  # Bcc kept, for Sent


def test_bcc_fields_are_removed_byte_exact_and_nothing_else() -> None:
    raw = (
        b"From: bot@example.test\r\nBcc: a@x.test,\r\n b@x.test\r\nTo: c@x.test\r\n"
        b"BCC : d@x.test\r\nX-Bcc-Note: kept\r\n\r\nBcc: stays in the body\r\n"
    )
    assert without_bcc(raw) == (
        b"From: bot@example.test\r\nTo: c@x.test\r\nX-Bcc-Note: kept\r\n"
        b"\r\nBcc: stays in the body\r\n"
    )
    unchanged = b"From: bot@example.test\r\nTo: c@x.test\r\n\r\nbody"
    assert without_bcc(unchanged) is unchanged
    no_header = b"\r\nBcc: a line of the body\r\n"
    assert without_bcc(no_header) is no_header


def test_present_fields_are_kept() -> None:
    raw = b"Date: x\r\nMessage-ID: <m@x>\r\nFrom: a@x.test\r\n\r\nbody"
    assert complete_message(raw, domain="example.test", now=NOW) == raw
