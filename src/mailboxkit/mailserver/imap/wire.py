"""Command framing: octets in, complete command frames out.

RFC 3501 §2.2 and §4.3: a command is a line ending in CRLF, except that a line may end with
a literal announcement and the literal's octets follow, then more of the command. The forms
are ``{n}`` (synchronizing: the client waits for a ``+`` continuation, RFC 3501 §7.5),
``{n+}`` (non-synchronizing, RFC 7888 LITERAL+/LITERAL-) and ``~{n}`` (literal8, RFC 3516).

Implementation notes (invariants):

- :class:`Framer` is sans-I/O: ``feed()`` octets, pull events with ``next_event()``.
  :func:`read_frame` drives one over an ``asyncio.StreamReader`` without reading past the end
  of the frame, so pipelined commands stay in the reader.
- Memory is capped before it is spent: a literal's announced size is checked against the
  limits before any of it is accepted, and its buffer grows only as octets arrive. A line
  longer than ``max_line`` is dropped as it streams in; only its first octets (for the tag)
  and last octets (for a literal announcement) are kept.
- Every octet is scanned once: the newline search resumes where the previous one stopped.
- A refused command (a limit exceeded, a line not ending in CRLF) raises
  :class:`CommandRejected` once the framer has skipped to the command's end. A refused
  synchronizing literal is refused at once: no ``+`` was sent, so the client sends nothing
  more for that command. A refused non-synchronizing literal is read and dropped (its octets
  are on the way and must not be taken for commands, RFC 7888 §4); if it is larger than
  ``max_literal`` even dropping it is not worth it and :class:`FramingError` ends the session.
- Literal announcements are recognised only at the very end of a line, as in RFC 3501 §9.
  An announcement whose size cannot be read (absurdly many digits) is fatal when
  non-synchronizing: treating it as an ordinary line would run the literal's octets as
  commands (a command-injection vector).
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailboxkit.mailserver.imap.errors import CommandRejected, FramingError
from mailboxkit.mailserver.imap.responses import Code, Condition

LITERAL_MINUS_MAX = 4096
"""Largest non-synchronizing literal a LITERAL- server accepts (RFC 7888 §4)."""

MAX_LITERAL_SIZE = 4_294_967_295
"""A literal's size is an IMAP ``number`` (RFC 3501 §9): unsigned 32-bit."""

_TAIL = 64  # octets of an over-long line kept to recognise a trailing literal announcement
_READ_CHUNK = 65536  # read size while a literal streams in (not a limit)
_MARKER = re.compile(rb"~?\{([0-9]+)(\+?)\}\Z")
_UNREADABLE_MARKER = re.compile(rb"[0-9]{%d,}\+?\}\Z" % (_TAIL // 2))
# RFC 3501 §9 tag: 1*<any ASTRING-CHAR except "+">, followed by SP.
_TAG = re.compile(rb"""([!#$&',-Z\[\]^-z|}~]+) """)


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Per-connection input limits; every value comes from settings.

    ``max_line``: octets per line, CRLF excluded. ``max_literal``: octets per literal (the
    APPENDLIMIT, RFC 7889). ``max_command``: octets per command, lines and literals together.
    ``literal_plus``: ``True`` if LITERAL+ is advertised (non-synchronizing literals of any
    accepted size), ``False`` for LITERAL- (at most 4096 octets, RFC 7888 §4).
    """

    max_line: int
    max_literal: int
    max_command: int
    literal_plus: bool = False

    def __post_init__(self) -> None:
        if min(self.max_line, self.max_command) < 1 or self.max_literal < 0:
            raise ValueError("frame limits must be positive")


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete command: its lines (CRLF removed) and the literals between them.

    ``lines[i]`` ends with the announcement of ``literals[i]``; the last line has none.
    """

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.lines) != len(self.literals) + 1:
            raise ValueError("a frame has one more line than literals")

    @property
    def size(self) -> int:
        """Octets of the command as received, CRLFs included."""
        return sum(len(line) + 2 for line in self.lines) + sum(map(len, self.literals))


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    """A synchronizing literal was accepted: send ``+ ...`` before its octets can arrive."""

    size: int


@dataclass(frozen=True, slots=True)
class _Marker:
    size: int | None  # None: not a representable number
    synchronizing: bool


class _State(enum.Enum):
    LINE = enum.auto()
    LITERAL = enum.auto()
    SKIP_LITERAL = enum.auto()


class _NeedData:
    pass


_NEED_DATA = _NeedData()


class Framer:
    """Incremental command framer (see the module notes for its invariants)."""

    def __init__(self, limits: FrameLimits) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._scan = 0
        self._state = _State.LINE
        self._remaining = 0
        self._failure: FramingError | None = None
        self._reset()

    def _reset(self) -> None:
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._literal = bytearray()
        self._size = 0
        self._started = False
        self._tag: str | None = None
        self._overflow = False
        self._overflow_length = 0
        self._tail = b""
        self._rejection: CommandRejected | None = None

    @property
    def buffered(self) -> int:
        """Octets received but not yet framed (e.g. pipelined after STARTTLS: reject them)."""
        return len(self._buffer)

    @property
    def idle(self) -> bool:
        """Whether no part of a command has been received."""
        return not self._buffer and not self._started and self._state is _State.LINE

    def bytes_wanted(self) -> int | None:
        """Exact octets still due for the current literal, or ``None`` while reading a line."""
        return None if self._state is _State.LINE else self._remaining

    def feed(self, data: bytes) -> None:
        """Append received octets."""
        if self._failure is not None:
            raise self._failure
        self._buffer += data

    def next_event(self) -> Frame | ContinuationRequest | None:
        """The next complete frame or continuation request; ``None`` when more data is needed.

        Raises :class:`CommandRejected` (the framer is ready for the next command) or
        :class:`FramingError` (the framer is unusable; end the session).
        """
        if self._failure is not None:
            raise self._failure
        while True:
            if self._state is _State.LINE:
                event = self._next_line()
                if isinstance(event, _NeedData):
                    return None
                if event is not None:
                    return event
            elif self._remaining and not self._buffer:
                return None
            else:
                self._take_literal()

    def _next_line(self) -> Frame | ContinuationRequest | _NeedData | None:
        buffer = self._buffer
        newline = buffer.find(b"\n", self._scan)
        if newline < 0:
            self._scan = len(buffer)
            if self._overflow or len(buffer) > self._limits.max_line + 1:
                self._spill()
            return _NEED_DATA
        raw = bytes(buffer[: newline + 1])
        del buffer[: newline + 1]
        self._scan = 0
        if not self._started:
            self._start(raw)
        length, tail = len(raw), raw
        if self._overflow:
            length, tail = self._overflow_length + len(raw), self._tail + raw
            self._overflow, self._overflow_length, self._tail = False, 0, b""
        crlf = tail.endswith(b"\r\n")
        content = tail[: -2 if crlf else -1]
        self._size += length
        if length - (2 if crlf else 1) > self._limits.max_line:
            self._refuse(Condition.BAD, Code.LIMIT, "Command line too long")
        elif not crlf:
            self._refuse(Condition.BAD, None, "Command line must end with CRLF")
        if self._size > self._limits.max_command:
            self._refuse(Condition.BAD, Code.LIMIT, "Command too long")
        marker = _literal_marker(content[-_TAIL:])
        if marker is None:
            return self._complete(content)
        return self._announce(marker, content)

    def _spill(self) -> None:
        """Drop the octets of an over-long line, keeping what is needed to finish it."""
        if not self._started:
            self._start(bytes(self._buffer[:_TAIL]))
        self._overflow = True
        self._overflow_length += len(self._buffer)
        self._tail = (self._tail + bytes(self._buffer[-_TAIL:]))[-_TAIL:]
        self._buffer.clear()
        self._scan = 0

    def _start(self, prefix: bytes) -> None:
        self._started = True
        match = _TAG.match(prefix)
        self._tag = match.group(1).decode("ascii") if match else None

    def _refuse(self, condition: Condition, code: Code | None, message: str) -> None:
        if self._rejection is None:
            self._rejection = CommandRejected(self._tag, condition, code, message)

    def _raise_rejection(self) -> CommandRejected:
        rejection = self._rejection
        assert rejection is not None
        self._reset()
        return rejection

    def _fail(self, message: str) -> FramingError:
        self._failure = FramingError(message)
        return self._failure

    def _complete(self, content: bytes) -> Frame:
        if self._rejection is not None:
            raise self._raise_rejection()
        frame = Frame((*self._lines, content), tuple(self._literals))
        self._reset()
        return frame

    def _announce(self, marker: _Marker, content: bytes) -> ContinuationRequest | None:
        limits, size = self._limits, marker.size
        if size is None:
            if not marker.synchronizing:
                raise self._fail("Unreadable literal size")
            self._refuse(Condition.NO, Code.TOOBIG, "Literal too big")
        elif self._rejection is None:
            if not marker.synchronizing and not limits.literal_plus and size > LITERAL_MINUS_MAX:
                self._refuse(Condition.BAD, Code.TOOBIG, "Non-synchronizing literal too big")
            elif size > limits.max_literal or self._size + size > limits.max_command:
                condition = Condition.NO if marker.synchronizing else Condition.BAD
                self._refuse(condition, Code.TOOBIG, "Literal too big")
        if self._rejection is not None:
            if marker.synchronizing:
                raise self._raise_rejection()
            assert size is not None
            if size > limits.max_literal:
                raise self._fail("Non-synchronizing literal too big")
            self._state, self._remaining = _State.SKIP_LITERAL, size
            return None
        assert size is not None
        self._lines.append(content)
        self._size += size
        self._state, self._remaining = _State.LITERAL, size
        return ContinuationRequest(size) if marker.synchronizing else None

    def _take_literal(self) -> None:
        take = min(self._remaining, len(self._buffer))
        if self._state is _State.LITERAL:
            self._literal += self._buffer[:take]
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining == 0:
            if self._state is _State.LITERAL:
                self._literals.append(bytes(self._literal))
                self._literal = bytearray()
            self._state = _State.LINE


def _literal_marker(tail: bytes) -> _Marker | None:
    """The literal announcement ending a line, if any (RFC 3501 §9 ``literal``)."""
    if not tail.endswith(b"}"):
        return None
    match = _MARKER.search(tail)
    if match is None:
        if _UNREADABLE_MARKER.search(tail):
            return _Marker(None, synchronizing=not tail.endswith(b"+}"))
        return None
    digits = match.group(1)
    size = int(digits) if len(digits) <= 10 else None
    if size is not None and size > MAX_LITERAL_SIZE:
        size = None
    return _Marker(size, synchronizing=not match.group(2))


async def read_frame(
    reader: asyncio.StreamReader,
    limits: FrameLimits,
    send_continuation: Callable[[], Awaitable[None]],
) -> Frame | None:
    """Read one command frame; ``None`` at end of input.

    Awaits ``send_continuation()`` whenever a synchronizing literal is accepted. Never reads
    beyond the frame (lines via ``readuntil``, literals by exact count), so the next call, a
    STARTTLS upgrade or an IDLE ``DONE`` read finds the following octets untouched. Raises
    :class:`CommandRejected` or :class:`FramingError` like :meth:`Framer.next_event`.
    """
    framer = Framer(limits)
    while True:
        event = framer.next_event()
        if isinstance(event, Frame):
            return event
        if isinstance(event, ContinuationRequest):
            await send_continuation()
            continue
        wanted = framer.bytes_wanted()
        if wanted is None:
            chunk = await _read_line_part(reader)
        else:
            chunk = await reader.read(min(wanted, _READ_CHUNK))
        if not chunk:
            return None
        framer.feed(chunk)


async def _read_line_part(reader: asyncio.StreamReader) -> bytes:
    """Up to and including the next LF, or what is buffered if the line exceeds the
    reader's own buffer limit (the framer enforces ``max_line`` on the pieces)."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as overrun:
        return await reader.readexactly(overrun.consumed)
    except asyncio.IncompleteReadError as eof:
        return eof.partial
