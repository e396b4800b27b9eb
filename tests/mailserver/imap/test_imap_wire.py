"""Framer tests: exact-byte transcripts for literals, LITERAL+/-, pipelining and limits."""

from __future__ import annotations

import asyncio

import pytest

from mailboxkit.mailserver.imap.commands import Idle, Login, is_idle_done, parse_command
from mailboxkit.mailserver.imap.errors import CommandRejected, CommandSyntaxError, FramingError
from mailboxkit.mailserver.imap.responses import Condition, Continuation, StatusResponse, serialize
from mailboxkit.mailserver.imap.wire import (
    ContinuationRequest,
    Frame,
    FrameLimits,
    Framer,
    read_frame,
)

PLUS = FrameLimits(max_line=200, max_literal=10_000, max_command=20_000, literal_plus=True)
MINUS = FrameLimits(max_line=200, max_literal=10_000, max_command=20_000, literal_plus=False)
READY = b"+ Ready for additional command text\r\n"


class Server:
    """Just enough of a server to play transcripts: continuations, canned completions,
    rejections, IDLE, rendered by the real serializer."""

    def __init__(self, limits: FrameLimits) -> None:
        self.framer = Framer(limits)
        self.idling: str | None = None

    def receive(self, data: bytes) -> bytes:
        self.framer.feed(data)
        out = b""
        while True:
            try:
                event = self.framer.next_event()
            except CommandRejected as rejected:
                out += serialize(rejected.response())
                continue
            except FramingError as fatal:
                return out + serialize(fatal.response())
            if event is None:
                return out
            if isinstance(event, ContinuationRequest):
                out += serialize(Continuation("Ready for additional command text"))
            else:
                out += self.complete(event)

    def complete(self, frame: Frame) -> bytes:
        if self.idling is not None:
            tag, self.idling = self.idling, None
            assert is_idle_done(frame)
            return serialize(StatusResponse(Condition.OK, "IDLE terminated", tag=tag))
        try:
            command = parse_command(frame)
        except CommandSyntaxError as error:
            return serialize(error.response())
        if isinstance(command, Idle):
            self.idling = command.tag
            return serialize(Continuation("idling"))
        name = type(command).__name__.upper()
        return serialize(StatusResponse(Condition.OK, f"{name} completed", tag=command.tag))


def play(limits: FrameLimits, script: list[tuple[str, bytes]]) -> None:
    """Feed each ``C`` entry; the server's output after it must equal the ``S`` entries that
    follow it, byte for byte."""
    server = Server(limits)
    actual: list[tuple[str, bytes]] = []
    for direction, data in script:
        if direction == "C":
            actual.append(("C", data))
            if out := server.receive(data):
                actual.append(("S", out))
    expected: list[tuple[str, bytes]] = []
    for direction, data in script:
        if direction == "S" and expected and expected[-1][0] == "S":
            expected[-1] = ("S", expected[-1][1] + data)
        else:
            expected.append((direction, data))
    assert actual == expected


def test_rfc3501_synchronizing_literals() -> None:
    """RFC 3501 §7.5 example: each {n} waits for a continuation."""
    play(
        PLUS,
        [
            ("C", b"A001 LOGIN {11}\r\n"),
            ("S", READY),
            ("C", b"FRED FOOBAR {7}\r\n"),
            ("S", READY),
            ("C", b"fat man\r\n"),
            ("S", b"A001 OK LOGIN completed\r\n"),
        ],
    )


def test_literal_split_anywhere() -> None:
    play(
        PLUS,
        [
            ("C", b"A001 LOG"),
            ("C", b"IN {11"),
            ("C", b"}\r"),
            ("C", b"\n"),
            ("S", READY),
            ("C", b"FRED FO"),
            ("C", b"OBAR {7}\r\nfat"),
            ("S", READY),
            ("C", b" man\r"),
            ("C", b"\n"),
            ("S", b"A001 OK LOGIN completed\r\n"),
        ],
    )


def test_zero_length_literal_still_needs_continuation() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 LOGIN {0}\r\n"),
            ("S", READY),
            ("C", b' ""\r\n'),
            ("S", b"a1 OK LOGIN completed\r\n"),
        ],
    )


def test_literal_plus_needs_no_continuation() -> None:
    """RFC 7888 §3: {n+} octets follow immediately."""
    play(
        PLUS,
        [
            ("C", b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n"),
            ("S", b"A001 OK LOGIN completed\r\n"),
        ],
    )


def test_pipelined_commands_in_one_buffer() -> None:
    play(
        MINUS,
        [
            ("C", b"a1 NOOP\r\na2 LOGIN {3+}\r\nabc {3+}\r\ndef\r\na3 SELECT INBOX\r\na4 FOO\r\n"),
            (
                "S",
                b"a1 OK NOOP completed\r\na2 OK LOGIN completed\r\na3 OK SELECT completed\r\n"
                b"a4 BAD Unknown command\r\n",
            ),
        ],
    )


def test_literal_minus_rejects_big_nonsync_literal_and_skips_it() -> None:
    """RFC 7888 §4: over 4096 octets is BAD [TOOBIG]; the octets are never run as commands."""
    smuggled = (b"\r\nb1 LOGOUT\r\n" * 400)[:5000]
    play(
        MINUS,
        [
            ("C", b"a1 LOGIN {5000+}\r\n" + smuggled[:3000]),
            ("C", smuggled[3000:] + b" {2+}\r\nxy\r\na2 NOOP\r\n"),
            ("S", b"a1 BAD [TOOBIG] Non-synchronizing literal too big\r\n"),
            ("S", b"a2 OK NOOP completed\r\n"),
        ],
    )


def test_literal_plus_accepts_nonsync_literal_over_4096() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 LOGIN {5000+}\r\n" + b"u" * 5000 + b" p\r\n"),
            ("S", b"a1 OK LOGIN completed\r\n"),
        ],
    )


def test_synchronizing_literal_over_limit_is_refused_without_continuation() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 APPEND INBOX {10001}\r\n"),
            ("S", b"a1 NO [TOOBIG] Literal too big\r\n"),
            ("C", b"a2 NOOP\r\n"),
            ("S", b"a2 OK NOOP completed\r\n"),
        ],
    )


def test_command_size_counts_all_literals() -> None:
    small = FrameLimits(max_line=200, max_literal=100, max_command=120, literal_plus=True)
    play(
        small,
        [
            ("C", b"a1 LOGIN {60}\r\n"),
            ("S", READY),
            ("C", b"u" * 60 + b" {60}\r\n"),
            ("S", b"a1 NO [TOOBIG] Literal too big\r\n"),
            ("C", b"a2 NOOP\r\n"),
            ("S", b"a2 OK NOOP completed\r\n"),
        ],
    )


def test_nonsync_literal_after_refusal_is_skipped() -> None:
    """Once a command is refused, its later non-synchronizing literals are still skipped."""
    play(
        PLUS,
        [
            ("C", b"a1 NOOP" + b"x" * 300 + b" {5+}\r\n\r\nb1 {3+}\r\nabc\r\na2 NOOP\r\n"),
            ("S", b"a1 BAD [LIMIT] Command line too long\r\na2 OK NOOP completed\r\n"),
        ],
    )


def test_sync_literal_after_refusal_ends_the_command() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 LOGIN " + b"x" * 300),
            ("C", b"x" * 300 + b" {5}\r\n"),
            ("S", b"a1 BAD [LIMIT] Command line too long\r\n"),
            ("C", b"a2 NOOP\r\n"),
            ("S", b"a2 OK NOOP completed\r\n"),
        ],
    )


def test_overlong_line_is_dropped_as_it_streams() -> None:
    server = Server(PLUS)
    assert server.receive(b"a1 NOOP ") == b""
    for _ in range(100):
        assert server.receive(b"y" * 1000) == b""
        assert server.framer.buffered == 0  # nothing of the line is kept
    assert server.receive(b"\r") == b""
    assert server.receive(b"\na2 NOOP\r\n") == (
        b"a1 BAD [LIMIT] Command line too long\r\na2 OK NOOP completed\r\n"
    )


def test_overlong_line_without_tag_is_untagged_bad() -> None:
    play(PLUS, [("C", b"x" * 500 + b"\r\n"), ("S", b"* BAD [LIMIT] Command line too long\r\n")])


def test_line_must_end_in_crlf() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 NOOP\na2 NOOP\r\n"),
            ("S", b"a1 BAD Command line must end with CRLF\r\na2 OK NOOP completed\r\n"),
        ],
    )


def test_unreadable_nonsync_literal_size_ends_session() -> None:
    """A literal whose size cannot be read cannot be skipped: BYE (no command injection)."""
    server = Server(PLUS)
    out = server.receive(b"a1 LOGIN {" + b"9" * 100 + b"+}\r\na2 LOGOUT\r\n")
    assert out == b"* BYE Unreadable literal size\r\n"
    with pytest.raises(FramingError):
        server.framer.feed(b"a3 NOOP\r\n")


@pytest.mark.parametrize("digits", [b"4294967296", b"9" * 11, b"9" * 100])
def test_unrepresentable_sync_literal_size_is_refused(digits: bytes) -> None:
    play(
        PLUS,
        [
            ("C", b"a1 LOGIN {" + digits + b"}\r\n"),
            ("S", b"a1 NO [TOOBIG] Literal too big\r\n"),
        ],
    )


def test_nonsync_literal_over_max_literal_ends_session() -> None:
    play(
        PLUS,
        [
            ("C", b"a1 APPEND INBOX {10001+}\r\n"),
            ("S", b"* BYE Non-synchronizing literal too big\r\n"),
        ],
    )


def test_idle_done() -> None:
    """RFC 2177 §3."""
    play(
        PLUS,
        [
            ("C", b"A001 IDLE\r\n"),
            ("S", b"+ idling\r\n"),
            ("C", b"DONE\r\n"),
            ("S", b"A001 OK IDLE terminated\r\n"),
        ],
    )


def test_starttls_pipelining_is_visible() -> None:
    """Octets after STARTTLS must be discarded by the server; the framer exposes them."""
    framer = Framer(PLUS)
    framer.feed(b"a1 STARTTLS\r\na2 LOGIN u p\r\n")
    assert isinstance(framer.next_event(), Frame)
    assert framer.buffered == len(b"a2 LOGIN u p\r\n")


def test_frame_requires_matching_lines() -> None:
    with pytest.raises(ValueError, match="one more line"):
        Frame((b"a",), (b"x",))
    with pytest.raises(ValueError, match="positive"):
        FrameLimits(max_line=0, max_literal=1, max_command=1)


# -- read_frame over a real StreamReader ----------------------------------------------


async def test_read_frame_sends_continuation_before_literal_arrives() -> None:
    reader = asyncio.StreamReader()
    sent: list[str] = []
    remaining = [b"FRED FOOBAR {7}\r\n", b"fat man\r\na2 NOOP\r\n"]

    async def send_continuation() -> None:
        sent.append("+")
        reader.feed_data(remaining.pop(0))  # the client answers only after the "+"

    reader.feed_data(b"A001 LOGIN {11}\r\n")
    frame = await read_frame(reader, PLUS, send_continuation)
    assert frame is not None
    assert parse_command(frame) == Login("A001", "FRED FOOBAR", "fat man")
    assert sent == ["+", "+"]
    reader.feed_eof()
    assert await reader.read() == b"a2 NOOP\r\n"  # nothing read beyond the frame


async def test_read_frame_pipelined_and_eof() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"a1 NOOP\r\na2 LOGIN {2+}\r\nab c\r\na3 NOO")
    reader.feed_eof()

    async def never() -> None:
        raise AssertionError("no continuation expected")

    first = await read_frame(reader, PLUS, never)
    second = await read_frame(reader, PLUS, never)
    assert first == Frame((b"a1 NOOP",))
    assert second == Frame((b"a2 LOGIN {2+}", b" c"), (b"ab",))
    assert await read_frame(reader, PLUS, never) is None  # EOF mid-command


async def test_read_frame_lines_longer_than_reader_buffer() -> None:
    reader = asyncio.StreamReader(limit=16)
    reader.feed_data(
        b"a1 LOGIN " + b"u" * 100 + b" p\r\na2 NOOP " + b"z" * 300 + b"\r\na3 NOOP\r\n"
    )
    reader.feed_eof()

    async def never() -> None:
        raise AssertionError("no continuation expected")

    frame = await read_frame(reader, PLUS, never)
    assert frame is not None and parse_command(frame) == Login("a1", "u" * 100, "p")
    with pytest.raises(CommandRejected) as rejected:
        await read_frame(reader, PLUS, never)
    assert serialize(rejected.value.response()) == b"a2 BAD [LIMIT] Command line too long\r\n"
    assert await read_frame(reader, PLUS, never) == Frame((b"a3 NOOP",))
    assert await read_frame(reader, PLUS, never) is None
