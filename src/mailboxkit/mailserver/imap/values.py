"""IMAP data values in responses and their encoding (RFC 3501 §4, §9; RFC 3516 §4.2).

Implementation notes:

- Strings are sent quoted when every octet is a 7-bit TEXT-CHAR and the string is short;
  anything with CR, LF, 8-bit octets or longer than :data:`QUOTED_MAX` is a literal
  (RFC 3501 §4.3). ``None`` is ``NIL``. Server literals are always synchronizing-form.
- BINARY data with NUL is a ``literal8`` (RFC 3516 §4.2), the one form made to carry NUL;
  without NUL it is an ordinary string, so ``~`` reaches only clients that asked for it.
  Elsewhere NUL stays in an ordinary literal, as it always was here: a message with NUL
  (appended as ``literal8``) reads back byte-exact through ``BODY[]`` as well.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import TypeAlias

QUOTED_MAX = 1024
"""Longest string sent as a quoted string; longer ones go as literals (rendering choice)."""

QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
"""Octets a quoted string may carry as they are (RFC 3501 §9 ``QUOTED-CHAR``, 7-bit)."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Atom:
    """A value sent verbatim as an atom (a flag, a keyword, ``NIL``-free item names)."""

    text: str


@dataclass(frozen=True, slots=True)
class Binary:
    """BINARY[] data (RFC 3516 §4.2): a ``literal8`` (``~{n}``) if it has NUL, else a string
    (``nstring / literal8``: clients that do not expect ``~`` see one only when needed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Encoded:
    """Octets already in wire form (BODYSTRUCTURE, whose multipart grammar is not a list; a
    FLAGS list encoded once for many messages)."""

    data: bytes


Value: TypeAlias = (
    int | str | bytes | Atom | Binary | Encoded | datetime.datetime | tuple["Value", ...] | None
)
"""A response data value: NIL, number, string (str is UTF-8), atom, date-time or list."""


def encode_value(value: Value) -> bytes:
    """Encode one data value (RFC 3501 §9 ``nstring``, ``number``, lists, ``date-time``)."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP encoding")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return str(value).encode("ascii")
    if isinstance(value, str):
        return encode_string(value.encode("utf-8"))
    if isinstance(value, bytes):
        return encode_string(value)
    if isinstance(value, Atom):
        return value.text.encode("ascii")
    if isinstance(value, Binary):
        if b"\x00" in value.data:
            return b"~{%d}\r\n" % len(value.data) + value.data
        return encode_string(value.data)
    if isinstance(value, Encoded):
        return value.data
    if isinstance(value, datetime.datetime):
        return b'"' + format_date_time(value).encode("ascii") + b'"'
    return b"(" + b" ".join(encode_value(item) for item in value) + b")"


def encode_string(data: bytes) -> bytes:
    """``quoted`` if safe and short, else ``literal`` (RFC 3501 §4.3, §9)."""
    if len(data) <= QUOTED_MAX and QUOTABLE.fullmatch(data):
        return quote(data)
    return b"{%d}\r\n" % len(data) + data


def quote(data: bytes) -> bytes:
    """``quoted`` (RFC 3501 §9): ``"``, the octets with ``\\`` and ``"`` escaped, ``"``."""
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_date_time(moment: datetime.datetime) -> str:
    """RFC 3501 §9 ``date-time`` without quotes: ``17-Jul-1996 02:44:25 -0700``."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("INTERNALDATE needs a timezone-aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    month = _MONTHS[moment.month - 1]
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    return f"{moment.day:02d}-{month}-{moment.year:04d} {clock} {zone}"
