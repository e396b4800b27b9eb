"""Tokenizer, sequence-set and mailbox-name units."""

from __future__ import annotations

import datetime

import pytest

from mailboxkit.mailserver.imap.mailbox_names import decode_mailbox_name, encode_mailbox_name
from mailboxkit.mailserver.imap.sequence_set import (
    SeqRange,
    SequenceSet,
    compact_uids,
    parse_sequence_set,
)
from mailboxkit.mailserver.imap.tokens import MAX_NESTING, ParseError, Tokens
from mailboxkit.mailserver.imap.wire import Frame


def tokens(*lines: bytes, literals: tuple[bytes, ...] = ()) -> Tokens:
    return Tokens(Frame(lines, literals))


def test_atoms_and_astrings() -> None:
    t = tokens(b"abc]def ghi] x")
    assert t.atom() == "abc"
    with pytest.raises(ParseError):
        t.atom()  # "]" is not an ATOM-CHAR
    t = tokens(b"abc]def ghi]")
    assert t.astring() == b"abc]def"
    t.space()
    assert t.astring() == b"ghi]"
    assert t.at_end()


def test_quoted_string_escapes() -> None:
    t = tokens(b'"a\\"b\\\\c" ""')
    assert t.string() == b'a"b\\c'
    t.space()
    assert t.string() == b""
    t.finish()


@pytest.mark.parametrize("bad", [b'"abc', b'"a\\b"', b'"a\rb"', b'"\xc3"', b"abc"])
def test_invalid_strings(bad: bytes) -> None:
    with pytest.raises(ParseError):
        tokens(bad).string()


def test_literal_then_rest_of_command() -> None:
    t = tokens(b"a {3}", b" {0+}", b" end", literals=(b"x\r\n", b""))
    assert t.atom() == "a"
    t.space()
    assert t.string() == b"x\r\n"
    t.space()
    assert t.astring() == b""
    t.space()
    assert t.atom() == "end"
    assert t.at_end()


def test_literal_must_end_its_line_and_match_size() -> None:
    with pytest.raises(ParseError):
        tokens(b"{3} x", b"", literals=(b"abc",)).string()
    with pytest.raises(ParseError):
        tokens(b"{4}", b"", literals=(b"abc",)).string()
    with pytest.raises(ParseError):
        tokens(b"{3}").string()


def test_nstring_and_nil() -> None:
    t = tokens(b'NIL nil "NIL" NILS')
    assert t.nstring() is None
    t.space()
    assert t.nstring() is None
    t.space()
    assert t.nstring() == b"NIL"
    t.space()
    with pytest.raises(ParseError):
        t.nstring()


def test_list_mailbox_allows_wildcards() -> None:
    t = tokens(b"foo/*% %")
    assert t.list_mailbox() == "foo/*%"
    t = tokens(b"foo/*")
    assert t.mailbox() == "foo/"  # "*" is not an ASTRING-CHAR
    assert not t.at_end()


def test_numbers() -> None:
    assert tokens(b"4294967295").number() == 4294967295
    for bad in (b"4294967296", b"00000000001", b"x"):
        with pytest.raises(ParseError):
            tokens(bad).number()
    with pytest.raises(ParseError):
        tokens(b"0").nz_number()
    assert tokens(b"9223372036854775807").mod_sequence() == 2**63 - 1
    assert tokens(b"0").mod_sequence(allow_zero=True) == 0
    for bad in (b"9223372036854775808", b"0", b"1" * 5000):
        with pytest.raises(ParseError):
            tokens(bad).mod_sequence()


def test_dates() -> None:
    assert tokens(b"1-Feb-1994").date() == datetime.date(1994, 2, 1)
    assert tokens(b'"01-feb-1994"').date() == datetime.date(1994, 2, 1)
    for bad in (b"1-Feb-94", b"32-Jan-2000", b'"1-Feb-1994', b"1-Fev-1994", b"29-Feb-2001"):
        with pytest.raises(ParseError):
            tokens(bad).date()
    moment = tokens(b'"17-Jul-1996 02:44:25 -0700"').date_time()
    assert moment == datetime.datetime(1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC)
    assert moment.utcoffset() == datetime.timedelta(hours=-7)
    assert tokens(b'" 7-Feb-1994 22:43:04 +0000"').date_time().day == 7
    for bad in (
        b'"7-Feb-1994 22:43:04 +0000"',
        b'"07-Feb-1994 22:43:04"',
        b'"07-Feb-1994 22:43:60 +0000"',
    ):
        with pytest.raises(ParseError):
            tokens(bad).date_time()


def test_flags() -> None:
    t = tokens(b"(\\seen \\ANSWERED $Forwarded \\Custom)")
    assert t.flag_list() == ("\\Seen", "\\Answered", "$Forwarded", "\\Custom")
    assert tokens(b"()").flag_list() == ()
    for bad in (b"(\\Seen", b"( \\Seen)", b"(\\Seen )", b"(\\*)", b"(\\)"):
        with pytest.raises(ParseError):
            tokens(bad).flag_list()


def test_generic_values_and_nesting_limit() -> None:
    t = tokens(b'(a "b" NIL (\\c ()) {1}', b")", literals=(b"d",))
    assert t.value() == ("a", b"b", None, ("\\c", ()), b"d")
    assert t.at_end()
    deep = b"(" * MAX_NESTING + b")" * MAX_NESTING
    assert tokens(deep).value() is not None
    with pytest.raises(ParseError, match="nested"):
        tokens(b"(" + deep + b")").value()


# -- sequence sets ---------------------------------------------------------------------


def test_sequence_set_parse_and_render() -> None:
    parsed = parse_sequence_set(b"2,4:7,9,12:*,*:3")
    assert parsed.ranges == (
        SeqRange(2, 2),
        SeqRange(4, 7),
        SeqRange(9, 9),
        SeqRange(12, None),
        SeqRange(None, 3),
    )
    assert str(parsed) == "2,4:7,9,12:*,*:3"
    assert parsed.uses_star and parsed.largest_explicit() == 12
    for bad in (b"", b"0", b"1:", b":1", b"1,,2", b"1:2:3", b"01", b"4294967296", b"$,1", b"$:2"):
        with pytest.raises(ValueError):
            parse_sequence_set(bad)
    assert parse_sequence_set(b"$").saved  # RFC 5182 SEARCHRES


def test_sequence_set_resolve() -> None:
    """RFC 3501 §6.4.8: "559:*" includes the highest UID even if it is below 559."""
    assert parse_sequence_set(b"559:*").resolve(50) == ((50, 50),)
    assert parse_sequence_set(b"1:*").resolve(0) == ()
    assert parse_sequence_set(b"5:3,1,2,10:*").resolve(8) == ((1, 5), (8, 8))
    assert parse_sequence_set(b"*").resolve(7) == ((7, 7),)
    assert list(parse_sequence_set(b"3,1:2,9").iter_numbers(5)) == [1, 2, 3]
    assert parse_sequence_set(b"3:*").contains(4, 4)
    assert not parse_sequence_set(b"3:4").contains(5, 10)


def test_compact_uids() -> None:
    assert compact_uids([1, 2, 3, 7]) == "1:3,7"
    assert compact_uids([7, 3, 2, 1, 2]) == "1:3,7"
    assert str(SequenceSet.of([5, 6, 8])) == "5:6,8"
    with pytest.raises(ValueError):
        compact_uids([])
    with pytest.raises(ValueError):
        compact_uids([0])


# -- mailbox names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "name"),
    [
        (b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),  # RFC 3501 §5.1.3
        (b"Entw&APw-rfe", "Entwürfe"),
        (b"&-", "&"),
        (b"A&-B", "A&B"),
        (b"inbox", "INBOX"),
        (b"INBOX/sub", "INBOX/sub"),
        (b"&2D3eAA-", "\U0001f600"),
        ("Entwürfe".encode(), "Entwürfe"),
    ],
)
def test_mailbox_name_codec(wire: bytes, name: str) -> None:
    assert decode_mailbox_name(wire) == name
    if wire.isascii() and name != "INBOX":
        assert encode_mailbox_name(name) == wire


@pytest.mark.parametrize(
    "wire",
    [
        b"&U,BTFw-&ZeVnLIqe-",  # two adjacent shifted runs: must be one
        b"&AGE-",  # "a" must be sent directly
        b"&U,BTFw",  # unterminated
        b"&U,B-",  # stray bits
        b"&2D0-",  # lone surrogate
        b"a\x01b",  # raw control character
        b"&AAE-",  # encoded control character
        b"\xff",  # not UTF-8
        "\u00e9\x01".encode(),  # control character in a UTF-8 name
    ],
)
def test_mailbox_name_rejects_non_canonical(wire: bytes) -> None:
    with pytest.raises(ValueError):
        decode_mailbox_name(wire)
