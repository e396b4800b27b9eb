"""Parsing and rendering of what IMAP4rev2 (RFC 9051) brings: ``$`` and ``RETURN (SAVE)``
(RFC 5182), UTF-8 mailbox names both ways, ``literal8`` (RFC 3516) and the transfer
decoding behind ``BINARY[]``."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.mailserver.imap.binary_sections import (
    UnknownEncoding,
    binary_source,
    decode_body,
)
from mailboxkit.mailserver.imap.commands import (
    Append,
    Command,
    Copy,
    Expunge,
    Fetch,
    Move,
    Search,
    Select,
    Status,
    Store,
    StoreMode,
    parse_command,
)
from mailboxkit.mailserver.imap.errors import CommandSyntaxError
from mailboxkit.mailserver.imap.fetch import FetchItem
from mailboxkit.mailserver.imap.mailbox_commands import StatusItem
from mailboxkit.mailserver.imap.mailbox_names import decode_mailbox_name
from mailboxkit.mailserver.imap.message_parts import parse_message
from mailboxkit.mailserver.imap.responses import (
    Binary,
    FetchData,
    ListData,
    StatusData,
    encode_value,
    serialize,
)
from mailboxkit.mailserver.imap.search import (
    SearchAll,
    SearchAnd,
    SearchFlag,
    SearchReturn,
    SearchSequence,
)
from mailboxkit.mailserver.imap.sequence_set import SAVED, SequenceSet, parse_sequence_set
from mailserver.imap.test_imap_commands import frame


def parse(data: bytes, *, utf8_names: bool = False) -> Command:
    return parse_command(frame(data), utf8_names=utf8_names)


SAVED_CASES: list[tuple[bytes, Command]] = [
    (b"a FETCH $ (UID)\r\n", Fetch("a", SAVED, (FetchItem.UID,))),
    (b"a UID FETCH $ FLAGS\r\n", Fetch("a", SAVED, (FetchItem.FLAGS,), uid=True)),
    (
        b"a UID STORE $ +FLAGS (\\Deleted)\r\n",
        Store("a", SAVED, StoreMode.ADD, ("\\Deleted",), uid=True),
    ),
    (b"a COPY $ Archive\r\n", Copy("a", SAVED, "Archive")),
    (b"a UID MOVE $ Trash\r\n", Move("a", SAVED, "Trash", uid=True)),
    (b"a UID EXPUNGE $\r\n", Expunge("a", SAVED)),
    (b"a SEARCH $\r\n", Search("a", SearchSequence(SAVED))),
    (
        b"a UID SEARCH UID $ SEEN\r\n",
        Search("a", SearchAnd((SearchSequence(SAVED, uid=True), SearchFlag("\\Seen"))), True),
    ),
    (
        b"a SEARCH RETURN (SAVE MIN) ALL\r\n",
        Search(
            "a",
            SearchAll(),
            return_options=(SearchReturn.SAVE, SearchReturn.MIN),
        ),
    ),
]


@pytest.mark.parametrize(
    ("wire", "expected"), SAVED_CASES, ids=[c[0].decode() for c in SAVED_CASES]
)
def test_dollar_and_save_parse(wire: bytes, expected: Command) -> None:
    """RFC 5182 §2.2: ``$`` wherever a sequence set may stand; §2.1 the SAVE option."""
    assert parse(wire) == expected


@pytest.mark.parametrize(
    "wire",
    [
        b"a FETCH 1,$ (UID)\r\n",  # $ only alone (RFC 5182 §4)
        b"a FETCH $:3 (UID)\r\n",
        b"a FETCH $$ (UID)\r\n",
        b"a SELECT INBOX (QRESYNC (1 1 $))\r\n",  # SELECT resets $: meaningless there
        b"a SEARCH RETURN (SAVED) ALL\r\n",
    ],
)
def test_dollar_misuse_is_bad(wire: bytes) -> None:
    with pytest.raises(CommandSyntaxError):
        parse(wire)


def test_saved_sequence_set_is_empty_outside_a_view() -> None:
    assert parse_sequence_set(b"$") is SAVED
    assert str(SAVED) == "$"
    assert SAVED.resolve(10) == ()
    assert not SAVED.contains(1, 10)
    with pytest.raises(ValueError):
        SequenceSet((), saved=False)


@pytest.mark.parametrize(
    ("wire", "rev1", "rev2"),
    [
        (b"a SELECT A&-B\r\n", "A&B", "A&-B"),
        (b'a SELECT "Entw&APw-rfe"\r\n', "Entwürfe", "Entw&APw-rfe"),
        (b'a SELECT "Entw\xc3\xbcrfe"\r\n', "Entwürfe", "Entwürfe"),
        (b"a SELECT inbox\r\n", "INBOX", "INBOX"),
    ],
)
def test_mailbox_names_by_mode(wire: bytes, rev1: str, rev2: str) -> None:
    """RFC 3501 §5.1.3 modified UTF-7 before ENABLE IMAP4rev2, UTF-8 after (RFC 9051 §5.1)."""
    assert parse(wire) == Select("a", rev1)
    assert parse(wire, utf8_names=True) == Select("a", rev2)


def test_rev2_names_need_no_modified_utf7() -> None:
    assert parse(b"a STATUS A&B (SIZE DELETED)\r\n", utf8_names=True) == Status(
        "a", "A&B", (StatusItem.SIZE, StatusItem.DELETED)
    )
    with pytest.raises(CommandSyntaxError):
        parse(b"a STATUS A&B (SIZE)\r\n")  # not canonical modified UTF-7
    with pytest.raises(ValueError):
        decode_mailbox_name(b"A\xffB", utf8=True)
    with pytest.raises(ValueError):
        decode_mailbox_name(b"A\x01B", utf8=True)


def test_names_rendered_by_mode() -> None:
    listed = ListData(("\\HasNoChildren",), "/", "Entwürfe & Ideen")
    assert serialize(listed) == b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe &- Ideen"\r\n'
    assert serialize(listed, utf8_names=True) == (
        '* LIST (\\HasNoChildren) "/" "Entwürfe & Ideen"\r\n'.encode()
    )
    status = StatusData('Say "hi"', (("SIZE", 10),))
    assert serialize(status, utf8_names=True) == b'* STATUS "Say \\"hi\\"" (SIZE 10)\r\n'


def test_literal8_only_when_there_is_nul() -> None:
    """RFC 3516 §4.2: ``nstring / literal8``; NUL has no other form."""
    assert encode_value(Binary(b"abc")) == b'"abc"'
    assert encode_value(Binary(b"a\r\nb")) == b"{4}\r\na\r\nb"
    assert encode_value(Binary(b"a\x00b")) == b"~{3}\r\na\x00b"
    assert encode_value(b"\x00") == b"{1}\r\n\x00"  # BODY[]: as before, not literal8
    data = FetchData(1, (("BINARY[1]<2>", Binary(b"\x00")),))
    assert serialize(data) == b"* 1 FETCH (BINARY[1]<2> ~{1}\r\n\x00)\r\n"


def test_append_takes_literal8_with_nul() -> None:
    command = parse(b"a APPEND INBOX ~{3+}\r\na\x00b\r\n")
    assert isinstance(command, Append)
    assert command.messages[0].data == b"a\x00b"
    assert command.messages[0].binary
    with pytest.raises(CommandSyntaxError):
        parse(b"a APPEND INBOX {3+}\r\na\x00b\r\n")


@given(st.binary(max_size=600))
def test_base64_round_trip_through_any_line_length(data: bytes) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert decode_body("base64", encoded) == data


@pytest.mark.parametrize(
    ("encoding", "body", "decoded"),
    [
        ("base64", b"aGVs\r\nbG8=\r\n", b"hello"),
        ("base64", b"aGVsbG8", b"hello"),  # padding missing
        ("base64", b"aGVs*bG8=!", b"hello"),  # stray characters skipped (RFC 2045 §6.8)
        ("quoted-printable", b"caf=C3=A9 =\r\nau lait  \r\nx=ZZ", "café au lait\r\nx=ZZ".encode()),
        ("7bit", b"as is", b"as is"),
        ("", b"\x00raw", b"\x00raw"),
        ("binary", b"\x00raw", b"\x00raw"),
    ],
)
def test_decode_body(encoding: str, body: bytes, decoded: bytes) -> None:
    assert decode_body(encoding, body) == decoded


def test_unknown_encoding() -> None:
    with pytest.raises(UnknownEncoding):
        decode_body("x-uuencode", b"begin 644 a\r\n")


def test_binary_source_finds_the_part_and_its_encoding() -> None:
    raw = (
        b"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Transfer-Encoding: Base64 \r\n\r\naGk=\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nbody\r\n--b--\r\n"
    )
    message = parse_message(raw)
    assert binary_source(message, ()) == ("", raw)
    assert binary_source(message, (1,)) == ("base64", b"aGk=")
    assert binary_source(message, (2,)) == ("", b"Subject: in\r\n\r\nbody")
    assert binary_source(message, (3,)) == ("", b"")
    assert binascii.a2b_base64(binary_source(message, (1,))[1]) == b"hi"
