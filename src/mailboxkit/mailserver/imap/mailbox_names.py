"""Mailbox names on the wire: modified UTF-7 and the case-insensitive INBOX.

RFC 3501 §5.1.3: printable US-ASCII except ``&`` stands for itself, ``&`` is ``&-``, and any
other run of characters is ``&`` + modified BASE64 (``,`` for ``/``, no padding) of its
UTF-16BE encoding + ``-``. RFC 3501 §5.1: ``INBOX`` is case-insensitive.

Implementation notes:

- Decoding is strict: a name is accepted only if re-encoding the decoded text gives back the
  exact octets, which rejects non-canonical forms (encoded printable ASCII, split shifted
  runs, stray bits, raw control characters) the way RFC 3501 §5.1.3 requires ("MUST").
- Control characters are refused in either form: no client needs them and they would reach
  logs and file systems.
- Names containing 8-bit octets are taken as UTF-8 (RFC 6855 §3 ``UTF8=ACCEPT``, RFC 9051
  §5.1): modified UTF-7 is 7-bit, so the two forms cannot be confused.
- Once a client has enabled IMAP4rev2 its names are UTF-8 both ways (RFC 9051 §5.1): ``&``
  stands for itself, so ``A&-B`` is that name of four characters, not ``A&B``.
"""

from __future__ import annotations

import base64
import re

INBOX = "INBOX"

_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def encode_mailbox_name(name: str) -> bytes:
    """Encode a mailbox name in modified UTF-7 (RFC 3501 §5.1.3)."""
    out = bytearray()
    run: list[str] = []

    def flush() -> None:
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be"))
            out.extend(b"&" + encoded.rstrip(b"=").replace(b"/", b",") + b"-")
            run.clear()

    for char in name:
        if "\x20" <= char <= "\x7e":
            flush()
            out.extend(b"&-" if char == "&" else char.encode("ascii"))
        else:
            run.append(char)
    flush()
    return bytes(out)


def wire_mailbox_name(name: str, *, utf8: bool) -> bytes:
    """A mailbox name as sent: UTF-8 to an IMAP4rev2 client, else modified UTF-7."""
    return name.encode("utf-8") if utf8 else encode_mailbox_name(name)


def decode_mailbox_name(raw: bytes, *, utf8: bool = False) -> str:
    """Decode a wire mailbox name; raise ``ValueError`` if it is not canonical.

    ``utf8``: the client enabled IMAP4rev2, whose names are UTF-8 only (RFC 9051 §5.1).
    ``INBOX`` in any case becomes ``"INBOX"``.
    """
    if utf8 or any(octet >= 0x80 for octet in raw):
        name = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    else:
        name = _decode_mutf7(raw)
        if encode_mailbox_name(name) != raw:
            raise ValueError("mailbox name is not canonical modified UTF-7")
    if _CONTROL.search(name):
        raise ValueError("control character in mailbox name")
    return INBOX if name.upper() == INBOX else name


def _decode_mutf7(raw: bytes) -> str:
    parts: list[str] = []
    position = 0
    while position < len(raw):
        shift = raw.find(b"&", position)
        if shift < 0:
            parts.append(raw[position:].decode("ascii"))
            break
        parts.append(raw[position:shift].decode("ascii"))
        match = _SHIFTED.match(raw, shift)
        if match is None:
            raise ValueError("unterminated modified UTF-7 shift")
        encoded = match.group(1)
        if not encoded:
            parts.append("&")
        else:
            if len(encoded) % 4 == 1:
                raise ValueError("truncated modified BASE64")
            padded = encoded.replace(b",", b"/") + b"=" * (-len(encoded) % 4)
            parts.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
        position = match.end()
    return "".join(parts)
