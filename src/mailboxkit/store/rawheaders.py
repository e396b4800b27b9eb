"""The header fields of a raw RFC 5322 message, read and edited byte-exact (no re-encoding)."""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_LINES = re.compile(rb"(?<=\n)")  # splits after each LF, keeping it


def header_section(raw: bytes) -> bytes:
    """The bytes of ``raw``'s header fields: every line up to the first empty one (``CRLF``
    or a bare ``LF``), found without reading the body; all of ``raw`` when no empty line ends
    the header section, b"" when ``raw`` starts with one."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = raw.find(b"\n\r\n")
    bare = raw.find(b"\n\n", 0, len(raw) if end < 0 else end + 1)  # "\n\n\r\n": the first
    if bare >= 0:
        end = bare
    return raw if end < 0 else raw[: end + 1]


def header_fields(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields of ``raw`` (each with its continuation lines) and the rest: the empty
    line that ends the header section and the body, or b"" when there is none. The fields and
    the rest put together are ``raw``."""
    head = header_section(raw)
    fields: list[bytes] = []
    for line in _LINES.split(head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line  # folded: part of the field above
        elif line:
            fields.append(line)
    return fields, raw[len(head) :]


def field_name(field: bytes) -> str:
    found = _FIELD_NAME.match(field)
    return found.group(1).decode("ascii").lower() if found else ""


def drop_fields(raw: bytes, drop: Callable[[bytes], bool]) -> bytes:
    """``raw`` without the header fields ``drop`` picks; ``raw`` itself when it picks none."""
    fields, rest = header_fields(raw)
    kept = [f for f in fields if not drop(f)]
    return raw if len(kept) == len(fields) else b"".join(kept) + rest


def without_bcc(raw: bytes) -> bytes:
    """``raw`` without its Bcc fields (RFC 5322 §3.6.3: the copies that go out do not name
    the blind recipients)."""
    return drop_fields(raw, lambda field: field_name(field) == "bcc")
