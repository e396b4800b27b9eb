"""Hypothesis properties of the IMAP wire layer.

1. Nothing a client sends makes framer + parser raise anything but the protocol errors
   (CommandSyntaxError, CommandRejected, FramingError).
2. Serialized values re-tokenize to the same values.
3. Sequence-set compaction round-trips.
Plus: framing does not depend on how the input is chunked; mailbox names round-trip.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailboxkit.mailserver.imap.commands import (
    is_idle_done,
    parse_command,
    parse_sasl_response,
)
from mailboxkit.mailserver.imap.errors import CommandRejected, CommandSyntaxError, FramingError
from mailboxkit.mailserver.imap.mailbox_names import decode_mailbox_name, encode_mailbox_name
from mailboxkit.mailserver.imap.responses import encode_string, encode_value, serialize
from mailboxkit.mailserver.imap.sequence_set import (
    SeqRange,
    SequenceSet,
    compact_uids,
    parse_sequence_set,
)
from mailboxkit.mailserver.imap.tokens import Tokens, TokenValue
from mailboxkit.mailserver.imap.wire import ContinuationRequest, Frame, FrameLimits, Framer

SMALL = FrameLimits(max_line=120, max_literal=300, max_command=600, literal_plus=False)
ROOMY = FrameLimits(max_line=1 << 16, max_literal=1 << 20, max_command=1 << 21, literal_plus=True)

VALID = [
    b"a1 LOGIN {5+}\r\nuser1 {6+}\r\npass 1\r\n",
    b"a2 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1:3 10:12)))\r\n",
    b"a3 UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100>) "
    b"(CHANGEDSINCE 12345 VANISHED)\r\n",
    b'a4 SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR NOT FROM "x" (SINCE 1-Feb-1994 UID 2:4) '
    b'MODSEQ "/flags/\\\\draft" all 5\r\n',
    b"a5 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted $Junk)\r\n",
    b'a6 APPEND INBOX (\\Seen) " 7-Feb-1994 22:43:04 -0800" {3+}\r\nabc ~{2+}\r\n\x00b\r\n',
    b'a7 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "%") RETURN (CHILDREN STATUS (MESSAGES))\r\n',
    b"a8 CREATE Entw&APw-rfe (USE (\\Drafts))\r\n",
    b'a9 ID ("name" "x" "version" NIL)\r\n',
    b"b1 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
    b"b2 UID EXPUNGE 3000:3002\r\nDONE\r\n*\r\n",
    b"b3 FETCH 1 (BINARY.PEEK[1.2]<0.100> BINARY.SIZE[1] MODSEQ)\r\n",
    b"b4 STATUS x (MESSAGES UIDNEXT HIGHESTMODSEQ APPENDLIMIT)\r\n",
]

VOCABULARY = [
    b" ",
    b"(",
    b")",
    b"[",
    b"]",
    b"<",
    b">",
    b".",
    b"\r\n",
    b"{3}\r\nabc",
    b"{2+}\r\nxy",
    b"~{1+}\r\n\x00",
    b'"q\\"s"',
    b"NIL",
    b"*",
    b"1:*",
    b"4294967296",
    b"0",
    b"%",
    b"\\Seen",
    b"a1",
    b"UID",
    b"FETCH",
    b"SEARCH",
    b"STORE",
    b"SELECT",
    b"LIST",
    b"APPEND",
    b"RETURN",
    b"BODY",
    b"BODY.PEEK",
    b"HEADER.FIELDS",
    b"MIME",
    b"NOT",
    b"OR",
    b"MODSEQ",
    b"QRESYNC",
    b"CHANGEDSINCE",
    b"VANISHED",
    b"+FLAGS.SILENT",
    b"CHARSET",
    b"1-Feb-1994",
    b"&AGE-",
    b'" 7-Feb-1994 22:43:04 -0800"',
    b"{99999999999999999999999+}\r\n",
]


def serve(data: bytes, limits: FrameLimits, chunk_sizes: list[int]) -> list[Frame]:
    """Feed ``data`` in chunks, parse every frame; only protocol errors may escape."""
    framer = Framer(limits)
    frames: list[Frame] = []
    sizes = itertools.cycle(chunk_sizes or [len(data) or 1])
    position = 0
    while position < len(data):
        size = next(sizes)
        try:
            framer.feed(data[position : position + size])
        except FramingError:
            return frames
        position += size
        while True:
            try:
                event = framer.next_event()
            except CommandRejected as rejected:
                serialize(rejected.response())
                continue
            except FramingError as fatal:
                serialize(fatal.response())
                return frames
            if event is None:
                break
            if isinstance(event, Frame):
                frames.append(event)
                exercise(event)
    return frames


def exercise(frame: Frame) -> None:
    is_idle_done(frame)
    for parse in (parse_command, lambda f: parse_sasl_response(f, "t")):
        try:
            parse(frame)
        except CommandSyntaxError as error:
            serialize(error.response())


@settings(deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), max_size=8))
def test_random_bytes_only_raise_protocol_errors(data: bytes, sizes: list[int]) -> None:
    serve(data, SMALL, sizes)


@settings(deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 2), st.binary(min_size=1, max_size=3)),
        max_size=6,
    ),
    st.lists(st.integers(1, 64), max_size=8),
)
def test_mutated_commands_only_raise_protocol_errors(
    command: bytes, mutations: list[tuple[int, int, bytes]], sizes: list[int]
) -> None:
    data = bytearray(command)
    for position, operation, octets in mutations:
        at = position % (len(data) + 1)
        if operation == 0:
            data[at:at] = octets
        elif operation == 1:
            del data[at : at + len(octets)]
        else:
            data[at : at + len(octets)] = octets
    for limits in (SMALL, ROOMY):
        serve(bytes(data), limits, sizes)


@settings(deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=40), st.sampled_from([b"a1 ", b""]))
def test_token_soup_only_raises_protocol_errors(words: list[bytes], prefix: bytes) -> None:
    serve(prefix + b"".join(words) + b"\r\n", ROOMY, [])
    serve(prefix + b"".join(words) + b"\r\n", SMALL, [7])


@settings(deadline=None)
@given(
    st.lists(st.sampled_from(VALID), min_size=1, max_size=5),
    st.lists(st.integers(1, 40), max_size=6),
)
def test_framing_is_independent_of_chunking(commands: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(commands)
    assert serve(stream, ROOMY, sizes) == serve(stream, ROOMY, [])


strings = st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"\x01"))
values: st.SearchStrategy[TokenValue] = st.recursive(
    st.none() | strings,
    lambda children: st.lists(children, max_size=4).map(tuple),
    max_leaves=25,
)


def retokenize(encoded: bytes) -> TokenValue:
    framer = Framer(ROOMY)
    framer.feed(b"t " + encoded + b"\r\n")
    events = []
    while (event := framer.next_event()) is not None:
        if not isinstance(event, ContinuationRequest):
            events.append(event)
    assert len(events) == 1 and framer.buffered == 0
    tokens = Tokens(events[0])
    assert tokens.tag() == "t"
    tokens.space()
    value = tokens.value()
    tokens.finish()
    return value


@given(values)
def test_serialized_values_retokenize_equal(value: TokenValue) -> None:
    assert retokenize(encode_value(value)) == value


@given(st.text(max_size=30))
def test_serialized_text_retokenizes_as_utf8(text: str) -> None:
    encoded = text.encode("utf-8", "surrogatepass")
    if b"\x00" in encoded:
        return
    assert retokenize(encode_value(encoded)) == encoded


@given(st.sets(st.integers(1, 5000), min_size=1, max_size=200))
def test_compaction_round_trips(numbers: set[int]) -> None:
    compact = compact_uids(numbers)
    parsed = parse_sequence_set(compact.encode())
    assert list(parsed.iter_numbers(5000)) == sorted(numbers)
    assert str(SequenceSet.of(numbers)) == compact
    assert len(parsed.ranges) == len(compact.split(","))


ends = st.none() | st.integers(1, 60)


@given(st.lists(st.tuples(ends, ends), min_size=1, max_size=8), st.integers(0, 50))
def test_resolve_matches_brute_force(
    pairs: list[tuple[int | None, int | None]], largest: int
) -> None:
    sequence_set = SequenceSet(tuple(SeqRange(a, b) for a, b in pairs))
    expected: set[int] = set()
    for first, last in pairs:
        low, high = sorted((largest if first is None else first, largest if last is None else last))
        expected |= {n for n in range(low, high + 1) if 1 <= n <= largest}
    assert list(sequence_set.iter_numbers(largest)) == sorted(expected)
    assert parse_sequence_set(str(sequence_set).encode()) == sequence_set


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@given(names)
def test_mailbox_names_round_trip(name: str) -> None:
    wire = encode_mailbox_name(name)
    assert wire.isascii()
    expected = "INBOX" if name.upper() == "INBOX" else name
    assert decode_mailbox_name(wire) == expected
    frame = Frame((b"a SELECT " + encode_string(wire),))
    if b"{" not in frame.lines[0]:
        command = parse_command(frame)
        assert getattr(command, "mailbox", None) == expected
