"""Message parsing: table-driven cases per RFC feature, and Hypothesis for "never raises"."""

from __future__ import annotations

import base64
import email
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.policy import compat32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailboxkit.store.mime import (
    Address,
    ParsedMessage,
    decode_header_value,
    has_reply_prefix,
    normalize_subject,
    parse_message,
)

CRLF = b"\r\n"


def msg(*headers: str | bytes, body: bytes = b"hello\r\n") -> bytes:
    """A message from header lines (str is UTF-8 encoded) and a body."""
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    return CRLF.join(lines) + CRLF + CRLF + body


def mime(boundary: str, *parts: bytes) -> bytes:
    """A multipart body; each part is its headers, a blank line and its body."""
    b = boundary.encode()
    return b"".join(b"--" + b + CRLF + p + CRLF for p in parts) + b"--" + b + b"--" + CRLF


def strings(p: ParsedMessage) -> Iterator[str]:
    yield from (p.subject, p.extracted_text, p.preview)
    yield from (s for s in (p.message_id, p.in_reply_to, p.text, p.html) if s is not None)
    yield from p.references
    for name, value in p.headers:
        yield from (name, value)
    for a in (p.from_, p.sender, *p.reply_to, *p.to, *p.cc, *p.bcc):
        if a is not None:
            yield from (a.name, a.email)
    for att in p.attachments:
        yield from (s for s in (att.filename, att.content_id, att.content_type) if s is not None)


def assert_well_formed(p: ParsedMessage) -> None:
    """What the store and the API rely on, whatever the input was."""
    for s in strings(p):
        s.encode("utf-8")  # valid Unicode: no lone surrogates
        assert "\x00" not in s
    for _, value in p.headers:
        assert "\r" not in value and "\n" not in value
    assert "\r" not in p.subject and "\n" not in p.subject
    assert len(p.preview) <= 200
    assert p.date is None or p.date.tzinfo is not None
    for att in p.attachments:
        assert att.sha256 == hashlib.sha256(att.data).hexdigest()
        assert att.size == len(att.data)
        assert att.disposition in ("attachment", "inline")
        assert att.content_type == att.content_type.lower() and "/" in att.content_type
    for a in (*p.to, *p.cc, *p.bcc, *p.reply_to):
        assert a.email


# --- a plain message and its headers ---------------------------------------------------------

PLAIN = msg(
    "From: Alice Example <alice@example.com>",
    "Sender: list-bounces@example.org",
    "Reply-To: Replies <replies@example.com>",
    'To: bob@example.com, "Doe, Jane" <jane@example.com>, undisclosed-recipients:;',
    "Cc: Carol <carol@example.com>",
    "Cc: dave@example.com",
    "Subject: Lunch\r\n on Friday?",
    "Date: Fri, 05 Jan 2024 12:30:00 +0100",
    "Message-ID: <m1@example.com>",
    "In-Reply-To: <m0@example.com> (Bob's message of Thu)",
    "References: <r1@example.com>\r\n <m0@example.com>",
    "Content-Type: text/plain; charset=us-ascii",
    body=b"Are we still on?\r\n",
)


def test_plain_message() -> None:
    p = parse_message(PLAIN)
    assert p.from_ == Address("Alice Example", "alice@example.com")
    assert p.sender == Address("", "list-bounces@example.org")
    assert p.reply_to == (Address("Replies", "replies@example.com"),)
    assert p.to == (Address("", "bob@example.com"), Address("Doe, Jane", "jane@example.com"))
    assert p.cc == (Address("Carol", "carol@example.com"), Address("", "dave@example.com"))
    assert p.bcc == ()
    assert p.subject == "Lunch on Friday?"
    assert p.date == datetime(2024, 1, 5, 12, 30, tzinfo=timezone(timedelta(hours=1)))
    assert p.message_id == "m1@example.com"
    assert p.in_reply_to == "m0@example.com"
    assert p.references == ("r1@example.com", "m0@example.com")
    assert p.text == "Are we still on?\n"
    assert p.html is None
    assert p.extracted_text == p.preview == "Are we still on?"
    assert p.attachments == ()
    assert p.headers[0] == ("From", "Alice Example <alice@example.com>")
    assert ("Subject", "Lunch on Friday?") in p.headers
    assert [name for name, _ in p.headers].count("Cc") == 2
    assert_well_formed(p)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?UTF-8?B?SGVsbG8gd8O2cmxk?=", "Hello wörld"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
        ("=?iso-8859-1?b?QW5kcukgUGlyYXJk?=", "André Pirard"),
        # RFC 2047 §6.2: whitespace between adjacent encoded-words is not displayed
        ("=?utf-8?q?a?= =?utf-8?q?b?=\r\n\t=?utf-8?q?c?= d", "abc d"),
        # a multi-byte character split across two words
        ("=?utf-8?b?4oI=?= =?utf-8?b?rA==?=", "€"),
        ("=?utf-8*en?q?lang_tag?=", "lang tag"),  # RFC 2231 §5 language in an encoded-word
        ("=?utf-8?b?SGVsbG8?=", "Hello"),  # padding missing
        ("=?x-no-such-charset?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8
        ("=?utf-8?q?caf=E9?=", "caf\ufffd"),  # invalid UTF-8: replacement character
        ("=?iso-8859-1?q?=93quoted=94?=", "“quoted”"),  # Windows-1252 superset
        ("=?unicode-escape?q?=5Cu0041?=", "\\u0041"),  # a codec that is not a charset
        ("=?utf-8?q?line=0D=0Abreak?=", "line  break"),  # no CR/LF into header values
        ("not =?encoded", "not =?encoded"),
        ("=?utf-8?q?a=00b?=", "ab"),
    ],
)
def test_encoded_word_subjects(header: str, expected: str) -> None:
    p = parse_message(msg(f"Subject: {header}"))
    assert p.subject == expected
    assert_well_formed(p)


def test_decode_header_value_keeps_plain_text() -> None:
    assert decode_header_value("plain = text ?") == "plain = text ?"


def test_encoded_display_names() -> None:
    p = parse_message(
        msg(
            "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>",
            'To: "=?iso-8859-1?q?Fran=E7ois?=" <f@example.fr>, =?utf-8?b?5bGx55Sw?= <y@example.jp>',
        )
    )
    assert p.from_ == Address("Jörg Müller", "joerg@example.de")
    assert p.to == (Address("François", "f@example.fr"), Address("山田", "y@example.jp"))


def test_eight_bit_utf8_headers() -> None:
    """RFC 6532 (SMTPUTF8): raw UTF-8 in headers, internationalized addresses."""
    p = parse_message(
        msg(
            "From: Jörg Müller <jörg@exämple.de>",
            "To: 用户 <用户@例子.广告>",
            "Subject: Grüße \u2013 你好",
            "Content-Type: text/plain; charset=utf-8",
            body="Grüße".encode(),
        )
    )
    assert p.from_ == Address("Jörg Müller", "jörg@exämple.de")
    assert p.to == (Address("用户", "用户@例子.广告"),)
    assert p.subject == "Grüße \u2013 你好"
    assert p.text == "Grüße"
    assert_well_formed(p)


def test_eight_bit_latin1_header_falls_back() -> None:
    p = parse_message(msg(b"Subject: caf\xe9 \x80", b"From: Andr\xe9 <a@example.com>"))
    assert p.subject == "café €"
    assert p.from_ == Address("André", "a@example.com")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@x> <b@x>", ("a@x", "b@x")),
        ("<a@x>,<b@x>, <c@x>", ("a@x", "b@x", "c@x")),
        ("<a@x>\r\n\t<b@x> <a@x>", ("a@x", "b@x")),  # deduplicated, order kept
        ("a@x, b@x", ("a@x", "b@x")),  # brackets missing
        ("a@x b@x (comment c@x)", ("a@x", "b@x")),
        ("garbage; more garbage", ()),
        ("<a@x> garbage <>", ("a@x",)),
        ("< spaced @x >", ("spaced@x",)),
        ("", ()),
    ],
)
def test_references(value: str, expected: tuple[str, ...]) -> None:
    assert parse_message(msg(f"References: {value}")).references == expected


@pytest.mark.parametrize(
    ("headers", "message_id", "in_reply_to"),
    [
        (("Message-ID: <x@y>", "In-Reply-To: <p@y>"), "x@y", "p@y"),
        (("Message-Id:  x@y ", 'In-Reply-To: "Bob\'s message" <p@y> <q@y>'), "x@y", "p@y"),
        (("Message-ID: <>", "In-Reply-To: garbage"), None, None),
        ((), None, None),
    ],
)
def test_message_ids(
    headers: tuple[str, ...], message_id: str | None, in_reply_to: str | None
) -> None:
    p = parse_message(msg(*headers))
    assert (p.message_id, p.in_reply_to) == (message_id, in_reply_to)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 02 Jan 2024 03:04:05 -0800", datetime(2024, 1, 2, 11, 4, 5, tzinfo=UTC)),
        ("2 Jan 2024 03:04:05 GMT", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("Tue, 02 Jan 2024 03:04:05 -0000", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("yesterday", None),
        ("Tue, 45 Foo 2024 99:99:99 +0000", None),
        ("Tue, 02 Jan 2024 03:04:05 +9999", None),
        ("", None),
    ],
)
def test_dates(value: str, expected: datetime | None) -> None:
    assert parse_message(msg(f"Date: {value}")).date == expected


# --- bodies ----------------------------------------------------------------------------------

ALTERNATIVE = msg(
    "Subject: alt",
    "Content-Type: multipart/alternative; boundary=ALT",
    body=mime(
        "ALT",
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlain version \xe2\x9c\x93",
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>HTML version</p>",
        b"Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR",
    ),
)

NESTED = msg(
    "Subject: nested",
    "Content-Type: multipart/mixed; boundary=MIX",
    body=mime(
        "MIX",
        b'Content-Type: multipart/alternative; boundary="ALT 2"\r\n\r\n'
        + mime(
            "ALT 2",
            b"Content-Type: text/plain\r\n\r\nSee the chart.",
            b'Content-Type: multipart/related; boundary=REL; type="text/html"\r\n\r\n'
            + mime(
                "REL",
                b'Content-Type: text/html\r\n\r\n<p>See the <img src="cid:chart@x">.</p>',
                b"Content-Type: image/png\r\nContent-ID: <chart@x>\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=",
            ),
        ),
        b'Content-Type: application/pdf; name="report.pdf"\r\n'
        b"Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; "
        b"filename=notes.txt\r\n\r\nnot the body",
        b"Content-Type: text/plain\r\nContent-Disposition: inline; filename=log.txt\r\n\r\nlog",
    ),
)


def test_alternative_prefers_plain_and_html() -> None:
    p = parse_message(ALTERNATIVE)
    assert p.text == "Plain version ✓"
    assert p.html == "<p>HTML version</p>"
    assert [(a.content_type, a.filename) for a in p.attachments] == [("text/calendar", None)]
    assert p.attachments[0].data == b"BEGIN:VCALENDAR"


def test_nested_mixed_with_attachments() -> None:
    p = parse_message(NESTED)
    assert p.text == "See the chart."
    assert p.html == '<p>See the <img src="cid:chart@x">.</p>'
    summary = [(a.content_type, a.filename, a.disposition, a.content_id) for a in p.attachments]
    assert summary == [
        ("image/png", None, "inline", "chart@x"),
        ("application/pdf", "report.pdf", "attachment", None),
        ("text/plain", "notes.txt", "attachment", None),
        ("text/plain", "log.txt", "inline", None),
    ]
    assert p.attachments[0].data == b"\x89PNG\r\n\x1a\n"
    assert p.attachments[1].data == b"%PDF-1.4\n"
    assert p.attachments[2].data == b"not the body"
    assert_well_formed(p)


def test_related_root_from_start_parameter() -> None:
    raw = msg(
        'Content-Type: multipart/related; boundary=R; start="<root@x>"',
        body=mime(
            "R",
            b"Content-Type: image/gif\r\nContent-ID: <img@x>\r\n\r\nGIF89a",
            b"Content-Type: text/html\r\nContent-ID: <root@x>\r\n\r\n<b>root</b>",
        ),
    )
    p = parse_message(raw)
    assert p.html == "<b>root</b>"
    assert [a.content_id for a in p.attachments] == ["img@x"]


def test_apple_mail_split_body_is_joined() -> None:
    """Apple Mail puts an inline image between two text/plain parts of one body."""
    raw = msg(
        "Content-Type: multipart/mixed; boundary=A",
        body=mime(
            "A",
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\nBefore the photo.",
            b"Content-Type: image/jpeg; name=IMG_1.jpg\r\nContent-Disposition: inline; "
            b"filename=IMG_1.jpg\r\n\r\n\xff\xd8\xff",
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\nAfter the photo.",
        ),
    )
    p = parse_message(raw)
    assert p.text == "Before the photo.\nAfter the photo."
    assert [(a.filename, a.disposition) for a in p.attachments] == [("IMG_1.jpg", "inline")]


INNER = (
    b"Received: from mx.example.com\r\n\tby mx.example.org; Thu, 4 Jan 2024 09:15:00 +0000\r\n"
    b"From: Carol <carol@example.com>\r\nSubject: Original / plan \xe2\x9c\x93\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:subject; bh="
    + b"A" * 60
    + b"\r\n b="
    + b"B" * 90
    + b"\r\n"
    b"Content-Type: text/plain\r\n\r\nThe original text.\r\nFrom the start of a line.\r\n"
)


def test_message_rfc822_is_an_eml_attachment() -> None:
    raw = msg(
        "Subject: Fwd: Original / plan",
        "Content-Type: multipart/mixed; boundary=F",
        body=mime(
            "F",
            b"Content-Type: text/plain\r\n\r\nSee below.",
            b"Content-Type: message/rfc822\r\n\r\n" + INNER,
        ),
    )
    p = parse_message(raw)
    assert p.text == "See below."
    (eml,) = p.attachments
    assert (eml.content_type, eml.filename, eml.disposition) == (
        "message/rfc822",
        "Original _ plan \u2713.eml",
        "attachment",
    )
    assert eml.data == INNER  # byte for byte, so DKIM signatures inside still verify
    assert (
        email.message_from_bytes(eml.data, policy=compat32)["From"] == "Carol <carol@example.com>"
    )


def test_message_global_may_be_base64() -> None:
    """RFC 6532 §3.7: message/global, unlike message/rfc822, may carry a transfer encoding."""
    raw = msg(
        "Content-Type: multipart/mixed; boundary=G",
        body=mime(
            "G",
            b"Content-Type: text/plain\r\n\r\nSee attached.",
            b"Content-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(INNER).replace(b"\n", b"\r\n"),
        ),
    )
    (eml,) = parse_message(raw).attachments
    assert (eml.content_type, eml.filename, eml.data) == ("message/global", "message.eml", INNER)


def test_delivery_status_report() -> None:
    """RFC 6522 multipart/report: the human-readable part is the body."""
    raw = msg(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=D",
        body=mime(
            "D",
            b"Content-Type: text/plain\r\n\r\nDelivery failed.",
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
            b"\r\nFinal-Recipient: rfc822; gone@example.com\r\nAction: failed\r\n",
            b"Content-Type: message/rfc822-headers\r\n\r\nSubject: hi\r\n",
        ),
    )
    p = parse_message(raw)
    assert p.text == "Delivery failed."
    assert [a.content_type for a in p.attachments] == [
        "message/delivery-status",
        "message/rfc822-headers",
    ]
    assert b"Final-Recipient: rfc822; gone@example.com" in p.attachments[0].data


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%E2%82%AC.pdf", "résumé €.pdf"),
        ("attachment; filename*=iso-8859-1'fr'caf%E9.txt", "café.txt"),
        ("attachment; filename*0*=utf-8''%E6%97%A5%E6%9C%AC; filename*1=.txt", "日本.txt"),
        ('attachment; filename*0="long "; filename*1="name.txt"', "long name.txt"),
        ('attachment; filename="=?utf-8?B?w6TDtsO8LnBkZg==?="', "äöü.pdf"),  # Outlook, Gmail
        ('attachment; filename="=?iso-8859-1?q?caf=E9?=.txt"', "café.txt"),
        ('attachment; filename="über.pdf"', "über.pdf"),  # raw UTF-8 (Apple Mail)
        ('attachment; filename="a\\"b.txt"', 'a"b.txt'),
        ("attachment; filename*=x-bogus''abc.txt", "abc.txt"),
        ("attachment; filename*=undefined''abc.txt", "abc.txt"),
        ('attachment; filename="  "', None),
        ("attachment", None),
    ],
)
def test_attachment_filenames(disposition: str, expected: str | None) -> None:
    raw = msg(
        "Content-Type: multipart/mixed; boundary=B",
        body=mime(
            "B",
            b"Content-Type: text/plain\r\n\r\nbody",
            b"Content-Type: application/octet-stream\r\nContent-Disposition: "
            + disposition.encode()
            + b"\r\n\r\ndata",
        ),
    )
    p = parse_message(raw)
    assert p.text == "body"
    assert [a.filename for a in p.attachments] == [expected]


def test_filename_from_content_type_name() -> None:
    raw = msg('Content-Type: application/pdf; name="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="')
    (att,) = parse_message(raw).attachments
    assert (att.filename, att.disposition) == ("résumé.pdf", "attachment")


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("Content-Type: text/plain; charset=utf-8", "Grüße".encode(), "Grüße"),
        ("Content-Type: text/plain", "Grüße".encode(), "Grüße"),  # 8-bit, no charset: UTF-8
        ("Content-Type: text/plain", "Grüße".encode("latin-1"), "Grüße"),  # else Latin-1
        ("Content-Type: text/plain; charset=us-ascii", "Grüße".encode(), "Grüße"),
        ("Content-Type: text/plain; charset=iso-8859-1", b"it\x92s", "it\u2019s"),  # Outlook
        ("Content-Type: text/plain; charset=x-unheard-of", b"caf\xc3\xa9 \xff", "café \ufffd"),
        ("Content-Type: text/plain; charset=gb2312", "中文".encode("gb2312"), "中文"),
        ("Content-Type: text/plain; charset=utf-16", "hi".encode("utf-16"), "hi"),
        ("Content-Type: text/plain; charset=utf-7", b"+2D3-", "\ufffd"),  # lone surrogate
        ("Content-Type: text/plain; charset=zlib", b"x\x9c", "x\ufffd"),  # not a text codec
        ('Content-Type: text/plain; charset="utf-8"', b"nul\x00byte", "nulbyte"),
        ("", b"no content type", "no content type"),  # RFC 2045 §5.2 default
        ("Content-Type: garbage", b"bad content type", "bad content type"),
    ],
)
def test_text_charsets(content_type: str, body: bytes, text: str) -> None:
    headers = (content_type,) if content_type else ()
    p = parse_message(msg("Subject: s", *headers, body=body))
    assert p.text == text
    assert p.attachments == ()
    assert_well_formed(p)


@pytest.mark.parametrize(
    ("cte", "body", "text"),
    [
        ("base64", b"SGVsbG8g\r\nd29ybGQ=", "Hello world"),
        ("base64", b"SGVsbG8gd29ybGQ", "Hello world"),  # padding missing
        ("base64", b"SGVs!!bG8=\r\n", "Hello"),  # stray characters
        ("base64", b"S", ""),
        ("quoted-printable", b"caf=C3=A9 soft=\r\nbreak =ZZ", "café softbreak =ZZ"),
        ("x-unknown", b"as is", "as is"),
    ],
)
def test_transfer_encodings(cte: str, body: bytes, text: str) -> None:
    raw = msg(
        "Content-Type: text/plain; charset=utf-8", f"Content-Transfer-Encoding: {cte}", body=body
    )
    assert parse_message(raw).text == text


def test_format_flowed() -> None:
    """RFC 3676 §4.2: soft line breaks joined, quotes and the signature line kept apart."""
    body = (
        b"This is a long \r\nparagraph.\r\n>Quoted soft \r\n>line.\r\n\r\n"
        b" >stuffed\r\n-- \r\nsig\r\n"
    )
    raw = msg("Content-Type: text/plain; format=flowed", body=body)
    assert parse_message(raw).text == (
        "This is a long paragraph.\n> Quoted soft line.\n\n>stuffed\n-- \nsig\n"
    )
    delsp = msg("Content-Type: text/plain; format=flowed; delsp=yes", body=b"ab \r\ncd\r\n")
    assert parse_message(delsp).text == "abcd\n"


# --- malformed structure ---------------------------------------------------------------------

PARTS = (
    b"--XYZ\r\nContent-Type: text/plain\r\n\r\nThe body.\r\n"
    b"--XYZ\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; "
    b"filename=a.zip\r\n\r\nPK\r\n--XYZ--\r\n"
)


@pytest.mark.parametrize(
    "content_type",
    [
        "Content-Type: multipart/mixed",  # boundary parameter missing
        "Content-Type: multipart/mixed; boundary=WRONG",  # boundary not in the body
        'Content-Type: multipart/mixed; boundary="XYZ',  # unterminated quoted string
    ],
)
def test_malformed_boundary_is_recovered(content_type: str) -> None:
    p = parse_message(msg(content_type, body=b"preamble\r\n" + PARTS))
    assert p.text == "The body."
    assert [a.filename for a in p.attachments] == ["a.zip"]


def test_unrecoverable_multipart_is_text() -> None:
    p = parse_message(msg("Content-Type: multipart/mixed", body=b"just text\r\n"))
    assert p.text == "just text\n"


def test_unterminated_multipart() -> None:
    raw = msg(
        "Content-Type: multipart/mixed; boundary=B",
        body=b"--B\r\nContent-Type: text/plain\r\n\r\ncut",
    )
    assert parse_message(raw).text == "cut"


def test_single_part_attachment() -> None:
    raw = msg(
        "Content-Type: text/plain", "Content-Disposition: attachment; filename=a.txt", body=b"x"
    )
    p = parse_message(raw)
    assert (p.text, p.html, [a.filename for a in p.attachments]) == (None, None, ["a.txt"])
    assert p.extracted_text == p.preview == ""


def test_deep_nesting_does_not_raise() -> None:
    raw = b"Subject: deep\r\n" + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(2000)
    )
    p = parse_message(raw + b"Content-Type: text/plain\r\n\r\nhi\r\n")
    assert p.subject == "deep"
    assert p.text is None  # deeper than MAX_DEPTH
    assert_well_formed(p)


def test_many_headers() -> None:
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(20000)) + b"Subject: last\r\n\r\nbody"
    p = parse_message(raw)
    assert (len(p.headers), p.subject, p.text) == (20001, "last", "body")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"no headers at all",
        b"Subject\r\n\r\nbody",
        b"\x00\x01\x02\xff",
        b"Subject: " + b"x" * 100_000,
        b'From: <<<@>>>, ((((, "unterminated\r\nTo: @@@, <a@b\r\n\r\n',
        b"Content-Type: text/plain; charset*=''\r\n\r\nx",
        b"Content-Type: text/plain; charset*0*=utf-8''a; charset*1*=%ZZ\r\n\r\nx",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n#86)C\r\n`\r\nend\r\n",
    ],
)
def test_garbage_does_not_raise(raw: bytes) -> None:
    assert_well_formed(parse_message(raw))


# --- extracted text and preview --------------------------------------------------------------


def test_extracted_text_from_plain_reply() -> None:
    body = (
        b"Yes, Friday works.\r\n\r\nSent from my iPhone\r\n\r\n"
        b"On Thu, Jan 4, 2024 at 9:00 AM Bob <bob@example.com> wrote:\r\n> Lunch?\r\n"
    )
    p = parse_message(msg("Content-Type: text/plain", body=body))
    assert p.extracted_text == p.preview == "Yes, Friday works."


def test_extracted_text_from_html_only_gmail_reply() -> None:
    html = (
        b'<div dir="ltr">Sounds <b>good</b>&nbsp;to me.<br><br>'
        b'<div class="gmail_signature">Bob</div></div><br>'
        b'<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Thu, Jan 4, 2024 at '
        b"9:00 AM Alice &lt;alice@example.com&gt; wrote:<br></div>"
        b'<blockquote class="gmail_quote">Lunch?</blockquote></div>'
    )
    p = parse_message(msg("Content-Type: text/html; charset=utf-8", body=html))
    assert p.text is None
    assert p.extracted_text == "Sounds good to me."


def test_preview_collapses_whitespace_and_is_capped() -> None:
    body = b"Word  \t one\r\n\r\ntwo " + b"long " * 100
    p = parse_message(msg("Content-Type: text/plain", body=body))
    assert p.preview.startswith("Word one two long long")
    assert len(p.preview) == 200


# --- subjects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "normalized", "reply"),
    [
        ("Hello World", "hello world", False),
        ("Re: Hello  World", "hello world", True),
        ("RE: re: Fwd: FW: hello world", "hello world", True),
        ("Re:Re:hello world", "hello world", True),
        ("Re[2]: hello world", "hello world", True),
        ("Re(3): hello world", "hello world", True),
        ("AW: WG: Hello World", "hello world", True),
        ("SV: VS: Antw: TR: RIF: Enc: Ref: Odp: hello world", "hello world", True),
        ("Re : hello world", "hello world", True),
        ("回复\uff1ahello world", "hello world", True),
        ("[list] Re: Hello World", "[list] hello world", True),
        ("Re: [list] Hello World", "[list] hello world", True),
        ("[list] Hello World", "[list] hello world", False),
        ("Reply needed", "reply needed", False),
        ("Regarding: things", "regarding: things", False),
        ("Re:", "", True),
        ("", "", False),
    ],
)
def test_subject_normalization(subject: str, normalized: str, reply: bool) -> None:
    assert normalize_subject(subject) == normalized
    assert has_reply_prefix(subject) is reply


# --- never raises ----------------------------------------------------------------------------


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_last_resort() -> Iterator[None]:
    """Fails when parse_message had to fall back to its catch-all (an unhandled parser bug)."""
    handler = _Failures()
    log = logging.getLogger("mailboxkit.store.mime")
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
    assert not handler.records, handler.records[0].getMessage()


KITCHEN_SINK = msg(
    "Subject: =?utf-8?q?caf=C3=A9?= =?iso-8859-1?b?6Q==?=",
    'From: =?utf-8?b?5bGx55Sw?= <y@example.jp>, "Doe, J" <j@example.com>',
    "Content-Type: multipart/mixed; boundary=K",
    body=mime(
        "K",
        b"Content-Type: text/plain; format=flowed; delsp=yes\r\n\r\nSee \r\nbelow.\r\n> q\r\n-- ",
        b"Content-Type: message/rfc822\r\n\r\n" + INNER,
        b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\n<div class=3Dgmail_quote><blockquote>caf=E9</blockquote>"
        b"<a href=3D'https://x'>y</a></div>",
        b"Content-Type: application/x; name*0*=utf-8''%C3%A9; name*1=x\r\nContent-Disposition: "
        b"inline; filename*=utf-8''a%20b\r\nContent-ID: <c@d>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAAA",
    ),
)
CORPUS = [
    PLAIN,
    ALTERNATIVE,
    NESTED,
    KITCHEN_SINK,
    msg("Content-Type: multipart/mixed", body=PARTS),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    with no_last_resort():
        assert_well_formed(parse_message(raw))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        if action == "insert":
            raw[at:at] = draw(
                st.sampled_from(
                    [b"\r\n", b"--", b"=?", b"?=", b"\x00", b"\xff", b";", b'"', b"<", b"=", b"*"]
                )
                | st.binary(max_size=16)
            )
        elif action == "delete":
            del raw[at : at + draw(st.integers(1, 32))]
        elif action == "replace" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif action == "duplicate":
            raw[at:at] = raw[at : at + draw(st.integers(1, 200))]
        elif action == "truncate":
            del raw[at:]
    return bytes(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_never_raise(raw: bytes) -> None:
    with no_last_resort():
        assert_well_formed(parse_message(raw))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_subject_functions_are_total(subject: str) -> None:
    normalized = normalize_subject(subject)
    assert normalized == normalize_subject(normalized) or has_reply_prefix(normalized)
    assert isinstance(has_reply_prefix(subject), bool)
