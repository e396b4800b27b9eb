"""The header fields of a raw RFC 5322 message, read and edited byte-exact (no re-encoding)."""

from __future__ import annotations

import re

_HEADER_END = re.compile(rb"(\r?\n)\r?\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def header_fields(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields of ``raw`` (each with its continuation lines) and the rest (the
    empty line and the body, or b"" when there is none)."""
    found = _HEADER_END.search(raw)
    head, rest = (raw[: found.end(1)], raw[found.end(1) :]) if found else (raw, b"")
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    return fields, rest


def field_name(field: bytes) -> str:
    found = _FIELD_NAME.match(field)
    return found.group(1).decode("ascii").lower() if found else ""


def without_bcc(raw: bytes) -> bytes:
    """``raw`` without its Bcc fields (RFC 5322 §3.6.3: the copies that go out do not name
    the blind recipients); ``raw`` itself when it has none."""
    fields, rest = header_fields(raw)
    kept = [f for f in fields if field_name(f) != "bcc"]
    if len(kept) == len(fields):
        return raw
    return b"".join(kept) + (rest or b"\r\n")
