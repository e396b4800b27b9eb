"""ENVELOPE and BODYSTRUCTURE values built from a message's part tree (RFC 3501 §7.4.2).

Implementation notes:

- Strings come from the raw header octets, unfolded, RFC 2047 encoded-words intact (clients
  decode them); 8-bit octets (RFC 6532) pass through and are sent as literals.
- Address lists are read leniently: quoted strings, comments, route addresses and group
  syntax (a group is a start marker ``(NIL NIL name NIL)`` and an end marker
  ``(NIL NIL NIL NIL)``, RFC 3501 §7.4.2). A display name in a comment (``a@b (Name)``) is
  used when there is no phrase, as Python's ``email.utils`` does. A mailbox without a domain
  gets the host ``MISSING_DOMAIN`` (Dovecot's choice), never NIL, which would mean a group.
- A text part with no Content-Type gets ``("charset" "us-ascii")`` (RFC 2045 §5.2).
"""

from __future__ import annotations

from mailboxkit.mailserver.imap.body_structure import (
    Address,
    BodyStructure,
    Disposition,
    Envelope,
    MultiPart,
    SinglePart,
)
from mailboxkit.mailserver.imap.message_parts import MimePart, line_count, parse_params

MISSING_DOMAIN = "MISSING_DOMAIN"


def envelope(message: MimePart) -> Envelope:
    """RFC 3501 §7.4.2 ENVELOPE of a message (a root or an encapsulated message)."""
    return Envelope(
        date=message.field("date"),
        subject=message.field("subject"),
        from_=_address_field(message, "from"),
        sender=_address_field(message, "sender"),
        reply_to=_address_field(message, "reply-to"),
        to=_address_field(message, "to"),
        cc=_address_field(message, "cc"),
        bcc=_address_field(message, "bcc"),
        in_reply_to=message.field("in-reply-to"),
        message_id=message.field("message-id"),
    )


def body_structure(part: MimePart) -> BodyStructure:
    """RFC 3501 §7.4.2 BODYSTRUCTURE of a message or part."""
    disposition, language, location = _extension(part)
    if part.is_multipart:
        return MultiPart(
            parts=tuple(body_structure(child) for child in part.children),
            subtype=part.subtype,
            params=part.params,
            disposition=disposition,
            language=language,
            location=location,
        )
    params = part.params
    if part.maintype == "text" and part.field("content-type") is None:
        params = (("charset", "us-ascii"),)
    body = part.body
    encapsulated = part.message
    return SinglePart(
        media_type=part.maintype,
        subtype=part.subtype,
        size=len(body),
        params=params,
        content_id=part.field("content-id"),
        description=part.field("content-description"),
        encoding=(part.field("content-transfer-encoding") or b"7BIT")
        .decode("ascii", "replace")
        .strip()
        .upper()
        or "7BIT",
        lines=line_count(body) if part.maintype == "text" or encapsulated else None,
        envelope=envelope(encapsulated) if encapsulated else None,
        body=body_structure(encapsulated) if encapsulated else None,
        md5=part.field("content-md5"),
        disposition=disposition,
        language=language,
        location=location,
    )


def _extension(part: MimePart) -> tuple[Disposition | None, tuple[str, ...], bytes | None]:
    """Content-Disposition (RFC 2183), Content-Language (RFC 3282), Content-Location."""
    disposition = None
    raw = part.field("content-disposition")
    if raw is not None:
        text = raw.decode("utf-8", "surrogateescape")
        kind, _, rest = text.partition(";")
        if kind.strip():
            disposition = Disposition(kind.strip().lower(), parse_params(rest))
    language: tuple[str, ...] = ()
    raw_language = part.field("content-language")
    if raw_language is not None:
        words = raw_language.decode("ascii", "replace").replace(",", " ").split()
        language = tuple(words)
    return disposition, language, part.field("content-location")


def _address_field(message: MimePart, name: str) -> tuple[Address, ...]:
    value = message.field(name)
    return () if value is None else parse_addresses(value)


def parse_addresses(value: bytes) -> tuple[Address, ...]:
    """An address-list header value (RFC 5322 §3.4) as ENVELOPE addresses."""
    text = value.decode("utf-8", "surrogateescape")
    tokens = _tokens(text)
    out: list[Address] = []
    pending: list[tuple[str, str]] = []
    in_group = False
    for kind, token in tokens:
        if kind == ":" and not in_group:
            out.append(Address(None, _encode(_phrase(pending)) or b"", None))
            pending, in_group = [], True
        elif kind == ";" and in_group:
            out.extend(_mailbox(pending))
            out.append(Address(None, None, None))
            pending, in_group = [], False
        elif kind == ",":
            out.extend(_mailbox(pending))
            pending = []
        else:
            pending.append((kind, token))
    out.extend(_mailbox(pending))
    if in_group:
        out.append(Address(None, None, None))
    return tuple(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    """Tokens: ("q", quoted), ("c", comment), ("<", angle content), (",", ""), (":", ""),
    (";", ""), ("w", other run)."""
    tokens: list[tuple[str, str]] = []
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if char in " \t\r\n":
            position += 1
        elif char == '"':
            content, position = _delimited(text, position, '"', '"')
            tokens.append(("q", content))
        elif char == "(":
            content, position = _delimited(text, position, "(", ")")
            tokens.append(("c", content))
        elif char == "<":
            close = text.find(">", position)
            close = length if close < 0 else close
            tokens.append(("<", text[position + 1 : close].strip()))
            position = close + 1
        elif char in ",:;":
            tokens.append((char, ""))
            position += 1
        else:
            start = position
            while position < length and text[position] not in ' \t\r\n"(<,:;':
                position += 1
            tokens.append(("w", text[start:position]))
    return tokens


def _delimited(text: str, position: int, opening: str, closing: str) -> tuple[str, int]:
    """A quoted string or (nested) comment starting at ``position``: content, next position."""
    out: list[str] = []
    depth = 0
    position += 1
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            out.append(text[position + 1])
            position += 2
            continue
        if char == closing and depth == 0:
            return "".join(out), position + 1
        if opening != closing and char == opening:
            depth += 1
        elif opening != closing and char == closing:
            depth -= 1
        out.append(char)
        position += 1
    return "".join(out), position


def _phrase(tokens: list[tuple[str, str]]) -> str:
    return " ".join(token for kind, token in tokens if kind in ("w", "q")).strip()


def _mailbox(tokens: list[tuple[str, str]]) -> list[Address]:
    if not tokens:
        return []
    angle = next((token for kind, token in tokens if kind == "<"), None)
    if angle is not None:
        name = _phrase([t for t in tokens if t[0] != "<"])
        spec = angle.rpartition(":")[2] if angle.startswith("@") else angle
    else:
        spec = "".join(token for kind, token in tokens if kind in ("w", "q"))
        comments = [token for kind, token in tokens if kind == "c"]
        name = comments[-1].strip() if comments else ""
    if not spec and not name:
        return []
    mailbox, at, host = spec.rpartition("@")
    if not at:
        mailbox, host = spec, MISSING_DOMAIN
    return [Address(_encode(name), _encode(mailbox), _encode(host) or MISSING_DOMAIN)]


def _encode(text: str) -> bytes | None:
    return text.encode("utf-8", "surrogateescape") if text else None
