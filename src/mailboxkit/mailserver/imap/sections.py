"""``BODY[section]<partial>`` contents, byte-exact from the raw message (RFC 3501 §6.4.5).

Implementation notes:

- ``HEADER``, ``TEXT`` and ``HEADER.FIELDS[.NOT]`` after a part number apply to the message
  encapsulated in a ``message/rfc822`` part; on any other part there is no such section.
  ``MIME`` is the part's own header. A section that does not exist is the empty string
  (Dovecot answers the same; RFC 3501 leaves it open).
- ``HEADER.FIELDS`` keeps the fields' raw octets (folding included) in message order and
  ends with the blank line, as the header itself does (RFC 3501 §6.4.5).
- A partial beyond the end is the empty string (RFC 3501 §6.4.5).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap.fetch import Partial, Section, SectionText
from mailboxkit.mailserver.imap.message_parts import MimePart, find_part


def section_bytes(message: MimePart, section: Section) -> bytes:
    """The octets of ``section`` of ``message``."""
    if not section.part:
        if section.text is None:
            return message.data[message.start : message.end]
        return _text(message, section)
    part = find_part(message, section.part)
    if part is None:
        return b""
    if section.text is None:
        return part.body
    if section.text is SectionText.MIME:
        return part.header
    if part.message is None:
        return b""
    return _text(part.message, section)


def _text(message: MimePart, section: Section) -> bytes:
    if section.text is SectionText.TEXT:
        return message.body
    if section.text is SectionText.HEADER:
        return message.header
    names = {name.lower() for name in section.fields}
    keep = section.text is SectionText.HEADER_FIELDS
    selected = b"".join(f.raw for f in message.fields if (f.name.lower() in names) == keep)
    return selected + b"\r\n"


def partial(data: bytes, window: Partial | None) -> bytes:
    """``<offset.length>`` of ``data`` (RFC 3501 §6.4.5)."""
    if window is None:
        return data
    return data[window.offset : window.offset + window.length]
