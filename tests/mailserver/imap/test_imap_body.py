"""The MIME part tree, BODYSTRUCTURE, ENVELOPE and BODY[section], checked against Python's
email parser on varied messages (multipart/alternative, nested mixed with attachments,
message/rfc822, encoded words, 8-bit, malformed)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import compat32
from email.utils import getaddresses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailboxkit.mailserver.imap.body_builder import body_structure, envelope, parse_addresses
from mailboxkit.mailserver.imap.body_structure import (
    Address,
    MultiPart,
    SinglePart,
    body_structure_value,
    envelope_value,
)
from mailboxkit.mailserver.imap.fetch import Section, SectionText
from mailboxkit.mailserver.imap.message_parts import MimePart, find_part, parse_message
from mailboxkit.mailserver.imap.sections import section_bytes


def crlf(message: EmailMessage | bytes) -> bytes:
    data = message if isinstance(message, bytes) else bytes(message)
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def plain() -> bytes:
    return crlf(b"From: Alice <alice@example.test>\nSubject: Hi\n\nHello\nthere\n")


def alternative() -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.test>"
    message["To"] = "Bob <bob@example.test>, carol@example.test"
    message["Subject"] = "Alternative"
    message.set_content("Plain text body.\n")
    message.add_alternative("<p>HTML body.</p>\n", subtype="html")
    return crlf(message)


def nested() -> bytes:
    inner = EmailMessage()
    inner["From"] = "Dave <dave@example.test>"
    inner["Subject"] = "Forwarded"
    inner["Message-ID"] = "<inner@example.test>"
    inner.set_content("Inner text.\n")
    inner.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream")
    outer = EmailMessage()
    outer["From"] = "Alice <alice@example.test>"
    outer["To"] = "bob@example.test"
    outer["Subject"] = "Nested"
    outer.set_content("See attached.\n")
    outer.add_alternative("<p>See attached.</p>\n", subtype="html")
    outer.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf", filename="a.pdf")
    outer.add_attachment(inner)
    return crlf(outer)


def encoded() -> bytes:
    return crlf(
        "From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.test>\n"
        'To: "Doe, John" <john@example.test>, Group: a@example.test, b@example.test;\n'
        "Cc: plain@example.test (Comment Name)\n"
        "Subject: =?utf-8?b?w6TDtsO8?= and\n more\n"
        "Date: Tue, 1 Jul 2025 10:00:00 +0200\n"
        "Message-ID: <id@example.test>\n"
        "In-Reply-To: <parent@example.test>\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        "Grüße\n".encode()
    )


def eight_bit_headers() -> bytes:
    return crlf("From: Zoë <zoe@example.test>\nSubject: Café\n\nbody\n".encode())


def no_boundary() -> bytes:
    return crlf(b"Subject: broken\nContent-Type: multipart/mixed\n\nJust text.\n")


def unclosed() -> bytes:
    return crlf(
        b"Subject: unclosed\nContent-Type: multipart/mixed; boundary=XX\n\n"
        b"preamble\n--XX\nContent-Type: text/plain\n\none\n--XX\n\ntwo\n"
    )


def header_only() -> bytes:
    return b"Subject: nothing else\r\nFrom: a@example.test\r\n"


MESSAGES = [plain, alternative, nested, encoded, eight_bit_headers]


def walk(ours: MimePart, theirs: Message) -> None:
    """Our tree matches the stdlib's, part by part."""
    assert ours.content_type == theirs.get_content_type()
    payload = theirs.get_payload()
    if isinstance(payload, list):
        if ours.message is not None:
            assert len(payload) == 1
            walk(ours.message, payload[0])
            return
        assert len(ours.children) == len(payload)
        for child, other in zip(ours.children, payload, strict=True):
            walk(child, other)
        return
    raw = theirs._payload  # get_payload() would decode 8-bit text by its charset
    assert isinstance(raw, str)
    assert ours.body == raw.encode("ascii", "surrogateescape")
    params = {k.lower(): v for k, v in (theirs.get_params() or [])[1:]}
    assert dict(ours.params) == params


@pytest.mark.parametrize("build", MESSAGES)
def test_tree_matches_the_stdlib_parser(build: object) -> None:
    raw = build()  # type: ignore[operator]
    walk(parse_message(raw), message_from_bytes(raw, policy=compat32))


def test_plain_body_structure() -> None:
    value = body_structure_value(body_structure(parse_message(plain())), extensible=True)
    assert (
        value.data == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 14 2 NIL NIL NIL NIL)'
    )
    basic = body_structure_value(body_structure(parse_message(plain())), extensible=False)
    assert basic.data == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 14 2)'


def test_alternative_body_structure() -> None:
    structure = body_structure(parse_message(alternative()))
    assert isinstance(structure, MultiPart)
    assert structure.subtype == "alternative"
    text, html = structure.parts
    assert isinstance(text, SinglePart) and isinstance(html, SinglePart)
    assert (text.media_type, text.subtype, html.subtype) == ("text", "plain", "html")
    assert text.lines == 1
    assert dict(structure.params)["boundary"]


def test_nested_body_structure_with_message_rfc822() -> None:
    raw = nested()
    tree = parse_message(raw)
    structure = body_structure(tree)
    assert isinstance(structure, MultiPart)
    assert structure.subtype == "mixed"
    alternative_part, pdf, forwarded = structure.parts
    assert isinstance(alternative_part, MultiPart)
    assert isinstance(pdf, SinglePart) and pdf.subtype == "pdf"
    assert pdf.encoding == "BASE64"
    assert pdf.disposition is not None and pdf.disposition.kind == "attachment"
    assert dict(pdf.disposition.params) == {"filename": "a.pdf"}
    assert isinstance(forwarded, SinglePart)
    assert (forwarded.media_type, forwarded.subtype) == ("message", "rfc822")
    assert forwarded.envelope is not None and forwarded.envelope.subject == b"Forwarded"
    assert isinstance(forwarded.body, MultiPart)
    assert forwarded.lines == forwarded_lines(raw)
    value = body_structure_value(structure, extensible=True).data
    assert value.startswith(b'((("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" ')
    assert b' "mixed" ("boundary" ' in value


def forwarded_lines(raw: bytes) -> int:
    part = message_from_bytes(raw, policy=compat32).get_payload()[2]
    inner = part.get_payload()[0].as_bytes()
    return inner.count(b"\n")


def test_envelope_with_encoded_words_groups_and_comments() -> None:
    env = envelope(parse_message(encoded()))
    assert env.subject == b"=?utf-8?b?w6TDtsO8?= and more"
    assert env.date == b"Tue, 1 Jul 2025 10:00:00 +0200"
    assert env.message_id == b"<id@example.test>"
    assert env.in_reply_to == b"<parent@example.test>"
    assert env.from_ == (Address(b"=?utf-8?q?J=C3=BCrgen?=", b"juergen", b"example.test"),)
    assert env.to == (
        Address(b"Doe, John", b"john", b"example.test"),
        Address(None, b"Group", None),
        Address(None, b"a", b"example.test"),
        Address(None, b"b", b"example.test"),
        Address(None, None, None),
    )
    assert env.cc == (Address(b"Comment Name", b"plain", b"example.test"),)
    value = envelope_value(env)
    assert isinstance(value, tuple)
    assert value[3] == value[2]  # Sender and Reply-To default to From (RFC 3501 §7.4.2)


def test_addresses_agree_with_the_stdlib() -> None:
    raw = (
        b'"Last, First" <first@example.test>, plain@example.test, Name <n@example.test>, '
        b"x@example.test (Comment)"
    )
    ours = [
        (a.name or b"", (a.mailbox or b"") + b"@" + (a.host or b"")) for a in parse_addresses(raw)
    ]
    theirs = [(n.encode(), e.encode()) for n, e in getaddresses([raw.decode()])]
    assert ours == theirs


def test_eight_bit_headers_pass_through() -> None:
    env = envelope(parse_message(eight_bit_headers()))
    assert env.subject == "Café".encode()
    assert env.from_[0].name == "Zoë".encode()


@pytest.mark.parametrize("build", [no_boundary, header_only])
def test_malformed_messages_are_single_parts(build: object) -> None:
    raw = build()  # type: ignore[operator]
    tree = parse_message(raw)
    assert not tree.is_multipart
    assert tree.content_type == "text/plain"
    body_structure_value(body_structure(tree), extensible=True)


def test_unclosed_multipart_runs_to_the_end() -> None:
    tree = parse_message(unclosed())
    assert [child.body for child in tree.children] == [b"one", b"two\r\n"]


def test_missing_domain_is_marked() -> None:
    assert parse_addresses(b"undisclosed-recipients") == (
        Address(None, b"undisclosed-recipients", b"MISSING_DOMAIN"),
    )
    assert parse_addresses(b"undisclosed-recipients:;") == (
        Address(None, b"undisclosed-recipients", None),
        Address(None, None, None),
    )


# -- sections --------------------------------------------------------------------------


def test_sections_of_a_nested_message() -> None:
    raw = nested()
    tree = parse_message(raw)
    theirs = message_from_bytes(raw, policy=compat32)
    assert section_bytes(tree, Section()) == raw
    header, _, body = raw.partition(b"\r\n\r\n")
    assert section_bytes(tree, Section(text=SectionText.HEADER)) == header + b"\r\n\r\n"
    assert section_bytes(tree, Section(text=SectionText.TEXT)) == body
    text = section_bytes(tree, Section((1, 1)))
    assert text == theirs.get_payload()[0].get_payload()[0].get_payload().encode()
    mime = section_bytes(tree, Section((1, 1), SectionText.MIME))
    assert mime.startswith(b"Content-Type: text/plain") and mime.endswith(b"\r\n\r\n")
    pdf = section_bytes(tree, Section((2,)))
    assert pdf == theirs.get_payload()[1].get_payload().encode()
    forwarded = section_bytes(tree, Section((3,)))
    assert forwarded.startswith(b"From: Dave")
    inner_header = section_bytes(tree, Section((3,), SectionText.HEADER))
    assert inner_header.startswith(b"From: Dave") and inner_header.endswith(b"\r\n\r\n")
    assert section_bytes(tree, Section((3, 1))) == b"Inner text.\r\n"
    assert section_bytes(tree, Section((3, 2))).strip() == b"AAFiaW5hcnk="
    assert section_bytes(tree, Section((9,))) == b""
    assert section_bytes(tree, Section((2,), SectionText.HEADER)) == b""


def test_header_fields_and_not() -> None:
    tree = parse_message(encoded())
    fields = section_bytes(tree, Section((), SectionText.HEADER_FIELDS, ("subject", "FROM")))
    assert fields == (
        b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.test>\r\n"
        b"Subject: =?utf-8?b?w6TDtsO8?= and\r\n more\r\n\r\n"
    )
    others = section_bytes(
        tree, Section((), SectionText.HEADER_FIELDS_NOT, ("Subject", "From", "To", "Cc"))
    )
    assert others.startswith(b"Date: ") and b"Subject" not in others


def test_part_one_of_a_single_part_message_is_its_body() -> None:
    tree = parse_message(plain())
    assert section_bytes(tree, Section((1,))) == b"Hello\r\nthere\r\n"
    assert find_part(tree, (2,)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parsing_never_fails(raw: bytes) -> None:
    tree = parse_message(raw)
    body_structure_value(body_structure(tree), extensible=True)
    envelope_value(envelope(tree))
    for path in ((), (1,), (1, 1), (2, 3)):
        section_bytes(tree, Section(path))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        min_size=1,
        max_size=4,
    )
)
def test_multipart_parts_round_trip(bodies: list[str]) -> None:
    boundary = "b0undary"
    raw = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
    for body in bodies:
        raw += f"--{boundary}\r\n\r\n{body}\r\n".encode()
    raw += f"--{boundary}--\r\n".encode()
    tree = parse_message(raw)
    assert [c.body.decode() for c in tree.children] == bodies
