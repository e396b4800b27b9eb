"""A message as a tree of MIME parts located by byte offsets, for FETCH.

IMAP serves parts byte-exact (``BODY[1.2]``, ``BODY[1.MIME]``, RFC 3501 §6.4.5) and reports
their octet and line counts (BODYSTRUCTURE, RFC 3501 §7.4.2), so this parser never decodes or
re-serializes: every part is a range of the raw message.

Implementation notes:

- The header ends at the first empty line; a line that is neither a field nor a continuation
  ends it early (the body starts there), as Python's ``email`` parser does. Lines may end in
  CRLF or bare LF.
- A multipart body is split at delimiter lines (RFC 2046 §5.1.1: ``--boundary``, optional
  transport padding, and the line break before it belongs to the delimiter). Without a close
  delimiter the last part runs to the end. A multipart with no boundary or no delimiter is
  read as ``text/plain`` (RFC 2046 §5.1.7 asks for robustness; Dovecot does the same).
- ``message/rfc822`` and ``message/global`` bodies (not base64/quoted-printable encoded) are
  parsed as messages (RFC 2046 §5.2.1, RFC 6532 §3.7). Children of ``multipart/digest``
  default to ``message/rfc822`` (RFC 2046 §5.1.5).
- Nesting deeper than :data:`MAX_DEPTH` is left unparsed (a leaf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

MAX_DEPTH = 32
"""MIME levels parsed; deeper parts are leaves."""

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_TOKEN = re.compile(r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")
_ENCAPSULATING = frozenset({"message/rfc822", "message/global"})
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: its name, its raw octets (name to final line break) and its value
    unfolded (RFC 5322 §2.2.3) without surrounding whitespace."""

    name: str
    raw: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class MimePart:
    """A part (or a whole message) as ranges of ``data``: header, then body to ``end``."""

    data: bytes
    start: int
    body_start: int
    end: int
    fields: tuple[HeaderField, ...]
    content_type: str  # lower-case "type/subtype"
    params: tuple[tuple[str, str], ...]  # names lower-case, values unquoted
    children: tuple[MimePart, ...] = ()
    message: MimePart | None = None  # the encapsulated message of message/rfc822

    @property
    def header(self) -> bytes:
        return self.data[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.end]

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    def field(self, name: str) -> bytes | None:
        """The first value of field ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((f.value for f in self.fields if f.name.lower() == wanted), None)

    def fields_named(self, name: str) -> list[bytes]:
        wanted = name.lower()
        return [f.value for f in self.fields if f.name.lower() == wanted]

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)


def parse_message(data: bytes) -> MimePart:
    """The part tree of a whole message."""
    return _parse(data, 0, len(data), "text/plain", 0)


def message_parts(message: MimePart) -> tuple[MimePart, ...]:
    """Parts 1..n of a message: a multipart's children, else the message itself as part 1
    (RFC 3501 §6.4.5: every message has at least a part 1)."""
    return message.children if message.is_multipart else (message,)


def subparts(part: MimePart) -> tuple[MimePart, ...]:
    """Parts numbered below ``part``: a multipart's children, or the parts of an
    encapsulated message (RFC 3501 §6.4.5 ``4.2.2.1``)."""
    if part.is_multipart:
        return part.children
    if part.message is not None:
        return message_parts(part.message)
    return ()


def find_part(message: MimePart, path: tuple[int, ...]) -> MimePart | None:
    """The part at a section path (``(1, 2)`` is ``1.2``), or None if there is none."""
    candidates = message_parts(message)
    part: MimePart | None = None
    for number in path:
        if not 1 <= number <= len(candidates):
            return None
        part = candidates[number - 1]
        candidates = subparts(part)
    return part


def line_count(body: bytes) -> int:
    """Text lines of a body (RFC 3501 §7.4.2 ``body-fld-lines``)."""
    if not body:
        return 0
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def _parse(data: bytes, start: int, end: int, default_type: str, depth: int) -> MimePart:
    fields, body_start = _header(data, start, end)
    content_type, params = _content_type(fields, default_type)
    part = MimePart(data, start, body_start, end, fields, content_type, params)
    if depth >= MAX_DEPTH:
        return part
    if part.maintype == "multipart":
        boundary = part.param("boundary")
        child_type = "message/rfc822" if part.subtype == "digest" else "text/plain"
        children = _split(data, body_start, end, boundary, child_type, depth) if boundary else ()
        if children:
            return replace(part, children=children)
        return replace(part, content_type="text/plain")
    if content_type in _ENCAPSULATING:
        encoding = (part.field("content-transfer-encoding") or b"").strip().lower()
        if encoding.decode("ascii", "replace") in _IDENTITY_ENCODINGS:
            inner = _parse(data, body_start, end, "text/plain", depth + 1)
            return replace(part, message=inner)
    return part


def _header(data: bytes, start: int, end: int) -> tuple[tuple[HeaderField, ...], int]:
    """Fields of the header at ``start`` and the offset where the body begins."""
    fields: list[HeaderField] = []
    field_start: int | None = None
    position = start
    while position < end:
        newline = data.find(b"\n", position, end)
        line_end = end if newline < 0 else newline + 1
        line = data[position:line_end]
        if line in (b"\r\n", b"\n"):
            _close_field(data, field_start, position, fields)
            return tuple(fields), line_end
        if line[:1] in (b" ", b"\t") and field_start is not None:
            position = line_end
            continue
        _close_field(data, field_start, position, fields)
        if _FIELD.match(line) is None:
            return tuple(fields), position  # not a header line: the body starts here
        field_start, position = position, line_end
    _close_field(data, field_start, end, fields)
    return tuple(fields), end


def _close_field(data: bytes, start: int | None, end: int, fields: list[HeaderField]) -> None:
    if start is None:
        return
    raw = data[start:end]
    match = _FIELD.match(raw)
    if match is None:
        return
    value = _FOLD.sub(b"", raw[match.end() :]).strip()
    fields.append(HeaderField(match.group(1).decode("ascii"), raw, value))


def _split(
    data: bytes, start: int, end: int, boundary: str, child_type: str, depth: int
) -> tuple[MimePart, ...]:
    """The parts of a multipart body between its delimiter lines (RFC 2046 §5.1.1)."""
    try:
        marker = re.escape(b"--" + boundary.encode("ascii"))
    except UnicodeEncodeError:
        return ()
    delimiter = re.compile(rb"^" + marker + rb"(--)?[ \t]*\r?(?:\n|\Z)", re.MULTILINE)
    parts: list[MimePart] = []
    part_start: int | None = None
    for match in delimiter.finditer(data, start, end):
        if match.start() != start and data[match.start() - 1 : match.start()] != b"\n":
            continue
        if part_start is not None:
            parts.append(
                _parse(data, part_start, _before_break(data, match.start()), child_type, depth + 1)
            )
        if match.group(1):
            return tuple(parts)
        part_start = match.end()
    if part_start is not None:
        parts.append(_parse(data, part_start, end, child_type, depth + 1))
    return tuple(parts)


def _before_break(data: bytes, position: int) -> int:
    """``position`` moved before the line break that precedes it (it belongs to the
    delimiter that follows, RFC 2046 §5.1.1)."""
    if data[position - 2 : position] == b"\r\n":
        return position - 2
    if data[position - 1 : position] == b"\n":
        return position - 1
    return position


def _content_type(
    fields: tuple[HeaderField, ...], default: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Content-Type (RFC 2045 §5.1); an invalid one is ``text/plain`` (RFC 2045 §5.2)."""
    value = next((f.value for f in fields if f.name.lower() == "content-type"), None)
    if value is None:
        return default, ()
    text = value.decode("utf-8", "replace")
    kind, _, rest = text.partition(";")
    maintype, slash, subtype = kind.strip().lower().partition("/")
    params = parse_params(rest)
    if not slash or not _TOKEN.fullmatch(maintype) or not _TOKEN.fullmatch(subtype):
        return "text/plain", params
    return f"{maintype}/{subtype}", params


def parse_params(text: str) -> tuple[tuple[str, str], ...]:
    """``; name=value; name="quoted"`` parameters (RFC 2045 §5.1), names lower-cased.

    RFC 2231 forms (``name*``, ``name*0``) are kept as written: clients decode them.
    """
    params: list[tuple[str, str]] = []
    position, length = 0, len(text)
    while position < length:
        semicolon = text.find(";", position)
        equals = text.find("=", position)
        if equals < 0:
            break
        if 0 <= semicolon < equals:
            position = semicolon + 1
            continue
        name = text[position:equals].strip().lower()
        position = equals + 1
        while position < length and text[position] in " \t":
            position += 1
        if position < length and text[position] == '"':
            value, position = _quoted(text, position)
        else:
            stop = text.find(";", position)
            stop = length if stop < 0 else stop
            value, position = text[position:stop].strip(), stop
        if name and _TOKEN.fullmatch(name.rstrip("*").replace("*", "")):
            params.append((name, value))
    return tuple(params)


def _quoted(text: str, position: int) -> tuple[str, int]:
    out: list[str] = []
    position += 1
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            out.append(text[position + 1])
            position += 2
            continue
        if char == '"':
            return "".join(out), position + 1
        out.append(char)
        position += 1
    return "".join(out), position
