"""Tokenizer over a command frame (RFC 3501 §4 data formats, §9 lexical rules).

A :class:`Tokens` cursor walks a :class:`~mailboxkit.mailserver.imap.wire.Frame`: the command
parsers call one method per grammar element and get typed values back, or a
:class:`ParseError` that ``parse_command`` turns into ``tag BAD``.

Implementation notes:

- Literals were framed already; a literal announcement is the last thing on its line and
  the tokenizer continues on the next line after taking the literal (RFC 3501 §4.3).
- Literals may not contain NUL (RFC 3501 §9 ``CHAR8``); ``literal8`` (RFC 3516) may, and is
  accepted only where a caller asks for it (APPEND).
- Quoted strings accept 8-bit octets only as valid UTF-8 (RFC 9051 §9 / RFC 6855 §3
  ``QUOTED-CHAR =/ UTF8-2 / UTF8-3 / UTF8-4``); all other grammar is 7-bit.
- A sequence set may be ``$``, the saved search result (RFC 5182 §2.2); only alone.
- Digit runs are length-checked before conversion: numbers are 32-bit, mod-sequences 63-bit.
- Parentheses nest at most :data:`MAX_NESTING` deep (search keys, generic lists), which keeps
  recursion bounded whatever the client sends.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeAlias, TypeVar

from mailboxkit.mailserver.imap.mailbox_names import decode_mailbox_name
from mailboxkit.mailserver.imap.sequence_set import MAX_NUMBER, SequenceSet, parse_sequence_set
from mailboxkit.mailserver.imap.wire import Frame

MAX_NESTING = 32
"""Deepest parenthesis nesting accepted (a recursion guard, not a protocol limit)."""

MAX_MOD_SEQUENCE = 9_223_372_036_854_775_807
"""RFC 7162 §7 ``mod-sequence-value``: positive unsigned 63-bit."""

T = TypeVar("T")

TokenValue: TypeAlias = str | bytes | tuple["TokenValue", ...] | None
"""A generic value: ``None`` for NIL, ``str`` for an atom, ``bytes`` for a string, lists."""


def _char_class(chars: bytes) -> bytes:
    return b"[" + b"".join(b"\\x%02x" % char for char in chars) + b"]"


_ATOM_CHARS = bytes(c for c in range(0x21, 0x7F) if c not in b'(){%*"\\]')
_ASTRING_CHARS = _ATOM_CHARS + b"]"
_ATOM = re.compile(_char_class(_ATOM_CHARS) + b"+")
_ASTRING = re.compile(_char_class(_ASTRING_CHARS) + b"+")
_LIST_MAILBOX = re.compile(_char_class(_ASTRING_CHARS + b"%*") + b"+")
_TAG = re.compile(_char_class(_ASTRING_CHARS.replace(b"+", b"")) + b"+")
_FLAG = re.compile(b"\\\\?" + _char_class(_ATOM_CHARS) + b"+")
_VALUE_ATOM = re.compile(b"\\\\?" + _char_class(_ASTRING_CHARS) + b"+")
_DIGITS = re.compile(rb"[0-9]+")
_SEQUENCE_SET = re.compile(rb"[0-9*:,]+|\$")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"(~?)\{([0-9]+)\+?\}")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"( [0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
"""RFC 3501 §2.3.2 system flags by upper-cased name; flags are case-insensitive."""


class ParseError(Exception):
    """A syntax error inside a command; ``parse_command`` adds the tag."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Tokens:
    """A cursor over one frame. Methods consume one grammar element or raise ParseError."""

    def __init__(self, frame: Frame, *, utf8_names: bool = False) -> None:
        self._utf8_names = utf8_names  # IMAP4rev2 enabled: mailbox names are UTF-8 only
        self._lines = frame.lines
        self._literals = frame.literals
        self._index = 0
        self._line = frame.lines[0]
        self._pos = 0
        self._depth = 0

    # -- structure ---------------------------------------------------------------------

    def at_end(self) -> bool:
        """Whether the whole command has been consumed."""
        return self._pos >= len(self._line) and self._index == len(self._lines) - 1

    def next_is(self, text: bytes) -> bool:
        """Whether the input continues with ``text`` (case-sensitive)."""
        return self._line.startswith(text, self._pos)

    def accept(self, text: bytes) -> bool:
        """Consume ``text`` if it comes next."""
        if self.next_is(text):
            self._pos += len(text)
            return True
        return False

    def expect(self, text: bytes, what: str) -> None:
        """Consume ``text`` or fail with "Expected <what>"."""
        if not self.accept(text):
            raise ParseError(f"Expected {what}")

    def space(self) -> None:
        """Consume one SP."""
        self.expect(b" ", "SP")

    def finish(self) -> None:
        """Fail unless the whole command has been consumed."""
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    @contextmanager
    def nested(self) -> Iterator[None]:
        """Count one level of parenthesis nesting for the duration of the block."""
        if self._depth >= MAX_NESTING:
            raise ParseError("Too deeply nested")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def parenthesized(self, item: Callable[[], T], *, allow_empty: bool = False) -> tuple[T, ...]:
        """``"(" item *(SP item) ")"``, or ``"()"`` when ``allow_empty``."""
        self.expect(b"(", "(")
        items: list[T] = []
        with self.nested():
            if allow_empty and self.accept(b")"):
                return ()
            items.append(item())
            while not self.accept(b")"):
                self.space()
                items.append(item())
        return tuple(items)

    def _match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        match = pattern.match(self._line, self._pos)
        if match is None:
            return None
        self._pos = match.end()
        return match.group()

    def match(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        """Consume a match of ``pattern`` or fail with "Expected <what>"."""
        match = pattern.match(self._line, self._pos)
        if match is None:
            raise ParseError(f"Expected {what}")
        self._pos = match.end()
        return match

    # -- atoms and numbers -------------------------------------------------------------

    def tag(self) -> str:
        """RFC 3501 §9 ``tag``: 1*<ASTRING-CHAR except "+">."""
        raw = self._match(_TAG)
        if raw is None:
            raise ParseError("Missing or invalid tag")
        return raw.decode("ascii")

    def atom(self) -> str:
        """RFC 3501 §9 ``atom``."""
        raw = self._match(_ATOM)
        if raw is None:
            raise ParseError("Expected atom")
        return raw.decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased (command names, item names: case-insensitive)."""
        return self.atom().upper()

    def peek_keyword(self) -> str | None:
        """The upper-cased atom that comes next, without consuming it."""
        match = _ATOM.match(self._line, self._pos)
        return match.group().decode("ascii").upper() if match else None

    def number(self) -> int:
        """RFC 3501 §9 ``number``: unsigned 32-bit."""
        raw = self._match(_DIGITS)
        if raw is None:
            raise ParseError("Expected number")
        if len(raw) > 10 or int(raw) > MAX_NUMBER:
            raise ParseError("Number out of range")
        return int(raw)

    def nz_number(self) -> int:
        """RFC 3501 §9 ``nz-number``."""
        number = self.number()
        if number == 0:
            raise ParseError("Expected non-zero number")
        return number

    def mod_sequence(self, *, allow_zero: bool = False) -> int:
        """RFC 7162 §7 ``mod-sequence-value`` (or ``mod-sequence-valzer``)."""
        raw = self._match(_DIGITS)
        if raw is None:
            raise ParseError("Expected mod-sequence")
        if len(raw) > 19 or int(raw) > MAX_MOD_SEQUENCE or (int(raw) == 0 and not allow_zero):
            raise ParseError("Mod-sequence out of range")
        return int(raw)

    # -- strings -----------------------------------------------------------------------

    def string(self) -> bytes:
        """RFC 3501 §9 ``string``: quoted or literal."""
        if self.next_is(b'"'):
            return self._quoted()
        if self.next_is(b"{"):
            return self.literal()[0]
        raise ParseError("Expected string")

    def _quoted(self) -> bytes:
        raw = self._match(_QUOTED)
        if raw is None:
            raise ParseError("Invalid quoted string")
        body = _QUOTED_ESCAPE.sub(rb"\1", raw[1:-1])
        if not body.isascii():
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("Invalid UTF-8 in quoted string") from None
        return body

    def literal(self, *, allow_binary: bool = False) -> tuple[bytes, bool]:
        """A literal's octets and whether it was a ``literal8`` (RFC 3516 ``~{n}``)."""
        match = _LITERAL.match(self._line, self._pos)
        if match is None or match.end() != len(self._line) or self._index >= len(self._literals):
            raise ParseError("Invalid literal")
        binary = bool(match.group(1))
        if binary and not allow_binary:
            raise ParseError("literal8 not allowed here")
        data = self._literals[self._index]
        if len(match.group(2)) > 10 or len(data) != int(match.group(2)):
            raise ParseError("Literal size mismatch")
        if not binary and b"\x00" in data:
            raise ParseError("NUL in literal")
        self._index += 1
        self._line = self._lines[self._index]
        self._pos = 0
        return data, binary

    def astring(self) -> bytes:
        """RFC 3501 §9 ``astring``: 1*ASTRING-CHAR or string."""
        raw = self._match(_ASTRING)
        return raw if raw is not None else self.string()

    def utf8_astring(self) -> str:
        """An astring decoded as UTF-8 (user names, passwords: RFC 9051 §6.2.3)."""
        try:
            return self.astring().decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Invalid UTF-8") from None

    def nstring(self) -> bytes | None:
        """RFC 3501 §9 ``nstring``: string or NIL."""
        if self.peek_keyword() == "NIL":
            self._pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> str:
        """RFC 3501 §9 ``list-mailbox``, decoded like a mailbox name."""
        raw = self._match(_LIST_MAILBOX)
        return _decode_name(raw if raw is not None else self.string(), self._utf8_names)

    def mailbox(self) -> str:
        """RFC 3501 §9 ``mailbox``, decoded (modified UTF-7 or, under IMAP4rev2, UTF-8;
        INBOX case-insensitive)."""
        return _decode_name(self.astring(), self._utf8_names)

    # -- structured values -------------------------------------------------------------

    def sequence_set(self) -> SequenceSet:
        """RFC 3501 §9 ``sequence-set``, or ``$`` (RFC 5182 §4 ``seq-last-command``)."""
        raw = self._match(_SEQUENCE_SET)
        if raw is None:
            raise ParseError("Expected sequence set")
        try:
            return parse_sequence_set(raw)
        except ValueError:
            raise ParseError("Invalid sequence set") from None

    def date(self) -> datetime.date:
        """RFC 3501 §9 ``date``: ``1-Feb-1994``, optionally quoted."""
        quoted = self.accept(b'"')
        match = self.match(_DATE, "date")
        if quoted:
            self.expect(b'"', "closing quote")
        day, month, year = match.groups()
        return _checked(lambda: datetime.date(int(year), _month(month), int(day)))

    def date_time(self) -> datetime.datetime:
        """RFC 3501 §9 ``date-time``: ``"17-Jul-1996 02:44:25 -0700"``."""
        match = self.match(_DATE_TIME, "date-time")
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        if int(zone_m) >= 60:
            raise ParseError("Invalid time zone")
        offset = datetime.timedelta(hours=int(zone_h), minutes=int(zone_m))
        return _checked(
            lambda: datetime.datetime(
                int(year),
                _month(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=datetime.timezone(-offset if sign == b"-" else offset),
            )
        )

    def flag(self) -> str:
        """RFC 3501 §9 ``flag``: system flags in canonical case, keywords as sent."""
        raw = self._match(_FLAG)
        if raw is None:
            raise ParseError("Expected flag")
        flag = raw.decode("ascii")
        return SYSTEM_FLAGS.get(flag.upper(), flag) if flag.startswith("\\") else flag

    def flag_list(self) -> tuple[str, ...]:
        """RFC 3501 §9 ``flag-list``: ``"(" [flag *(SP flag)] ")"``."""
        return self.parenthesized(self.flag, allow_empty=True)

    def value(self) -> TokenValue:
        """Any atom, string, NIL or parenthesized list (for extension data)."""
        if self.next_is(b"("):
            return self.parenthesized(self.value, allow_empty=True)
        if self.next_is(b'"') or self.next_is(b"{"):
            return self.string()
        raw = self._match(_VALUE_ATOM)
        if raw is None:
            raise ParseError("Expected value")
        return None if raw.upper() == b"NIL" else raw.decode("ascii")


def _decode_name(raw: bytes, utf8: bool) -> str:
    try:
        return decode_mailbox_name(raw, utf8=utf8)
    except ValueError:
        raise ParseError("Invalid mailbox name") from None


def _month(name: bytes) -> int:
    month = _MONTHS.get(name.decode("ascii").upper())
    if month is None:
        raise ParseError("Invalid month")
    return month


def _checked(build: Callable[[], T]) -> T:
    try:
        return build()
    except ValueError:
        raise ParseError("Invalid date") from None
