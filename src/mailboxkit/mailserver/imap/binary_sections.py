"""``BINARY[part]`` contents: a part's body with its Content-Transfer-Encoding undone
(RFC 3516 §4.1, RFC 2045 §6).

Implementation notes:

- ``BINARY[]`` (no part) is the whole message as stored. A transfer encoding applies to a
  body, and the message as a whole is a header and a body; RFC 3516 §4.1 decodes "the
  section's" encoding, and the header is in no encoding to undo.
- A multipart or ``message/rfc822`` part is its body unchanged: RFC 2045 §6.4 allows them
  only the identity encodings, so there is nothing to undo.
- A part that does not exist is empty, as ``BODY[]`` answers it (``sections``).
- No field, ``7bit``, ``8bit`` and ``binary`` are the identity (RFC 2045 §6.2). ``base64``
  skips octets outside its alphabet (RFC 2045 §6.8 asks decoders to ignore them) and decodes
  what it can of a truncated end, as mail readers do. ``quoted-printable`` drops the
  whitespace a transport may have added before a line break (RFC 2045 §6.7 rule 3), the soft
  line breaks, and decodes ``=XX``; a malformed ``=`` is kept as it is (§6.7, note 1).
- Any other encoding raises :class:`UnknownEncoding`, which FETCH answers
  ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3).
- :func:`decode_body` is a plain function of bytes so that a large part can be decoded in a
  worker process (``Offload``), like the parse of a large message.
"""

from __future__ import annotations

import binascii
import re

from mailboxkit.mailserver.imap.message_parts import MimePart, find_part

_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_PADDING_WHITESPACE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


class UnknownEncoding(ValueError):
    """A Content-Transfer-Encoding this server cannot decode (RFC 3516 §4.3 UNKNOWN-CTE)."""


def binary_source(message: MimePart, part: tuple[int, ...]) -> tuple[str, bytes]:
    """The transfer encoding to undo (lower-case, ``""`` for none) and the octets of
    ``BINARY[part]`` before decoding."""
    if not part:
        return "", message.data[message.start : message.end]
    found = find_part(message, part)
    if found is None:
        return "", b""
    if found.is_multipart or found.message is not None:
        return "", found.body
    encoding = found.field("content-transfer-encoding") or b""
    return encoding.decode("ascii", "replace").strip().lower(), found.body


def decode_body(encoding: str, body: bytes) -> bytes:
    """``body`` with ``encoding`` undone; :class:`UnknownEncoding` if it is not one we know."""
    if encoding in _IDENTITY:
        return body
    if encoding == "base64":
        return _base64(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(_PADDING_WHITESPACE.sub(b"", body))
    raise UnknownEncoding(encoding)


def _base64(body: bytes) -> bytes:
    # Only the alphabet counts (padding too is dropped and restored), so line breaks, stray
    # characters and a missing or early "=" cannot make decoding fail.
    letters = _NOT_BASE64.sub(b"", body)
    whole = len(letters) - len(letters) % 4
    tail = letters[whole:]
    decoded = binascii.a2b_base64(letters[:whole]) if whole else b""
    if len(tail) >= 2:  # a truncated last group still carries one or two octets
        decoded += binascii.a2b_base64(tail + b"=" * (4 - len(tail)))
    return decoded
