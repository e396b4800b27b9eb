"""ENVELOPE and BODYSTRUCTURE values for FETCH responses (RFC 3501 §7.4.2, §9 ``envelope``,
``body``).

The handler fills these from the parsed message; :func:`envelope_value` and
:func:`body_structure_value` turn them into response values.

Implementation notes:

- Header-derived strings are sent as the raw header octets (RFC 2047 encoded-words intact);
  the serializer chooses quoted or literal.
- RFC 3501 §7.4.2: an absent or empty Sender or Reply-To is reported as the From list.
- ``BODY`` is BODYSTRUCTURE without extension data (``extensible=False``).
- RFC 3501 §9 ``body-type-mpart = 1*body SP media-subtype`` and ``env-from = "(" 1*address
  ")"``: parts and addresses are concatenated without spaces, unlike other lists, so they
  are encoded to octets here (:class:`Encoded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mailboxkit.mailserver.imap.responses import Encoded, Value, encode_value

Text: TypeAlias = str | bytes


@dataclass(frozen=True, slots=True)
class Address:
    """RFC 3501 §9 ``address``: ``(name adl mailbox host)``; ``adl`` is always NIL.

    A group start is ``Address(None, group_name, None)``, a group end ``Address(None, None,
    None)`` (RFC 3501 §7.4.2).
    """

    name: Text | None
    mailbox: Text | None
    host: Text | None

    def value(self) -> Value:
        """The address as a response value."""
        return (self.name, None, self.mailbox, self.host)


@dataclass(frozen=True, slots=True)
class Envelope:
    """RFC 3501 §7.4.2 ENVELOPE fields, in wire order; empty address lists are NIL."""

    date: Text | None = None
    subject: Text | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: Text | None = None
    message_id: Text | None = None


def envelope_value(envelope: Envelope) -> Value:
    """The ENVELOPE response value."""
    sender = envelope.sender or envelope.from_
    reply_to = envelope.reply_to or envelope.from_
    lists = (envelope.from_, sender, reply_to, envelope.to, envelope.cc, envelope.bcc)
    return (
        envelope.date,
        envelope.subject,
        *(_addresses(addresses) for addresses in lists),
        envelope.in_reply_to,
        envelope.message_id,
    )


def _addresses(addresses: tuple[Address, ...]) -> Value:
    """RFC 3501 §9 ``env-from = "(" 1*address ")" / nil``: no SP between addresses."""
    if not addresses:
        return None
    return Encoded(b"(" + b"".join(encode_value(a.value()) for a in addresses) + b")")


Params: TypeAlias = tuple[tuple[Text, Text], ...]


@dataclass(frozen=True, slots=True)
class Disposition:
    """Content-Disposition: type and parameters (RFC 3501 §9 ``body-fld-dsp``)."""

    kind: Text
    params: Params = ()


@dataclass(frozen=True, slots=True)
class SinglePart:
    """A non-multipart body (RFC 3501 §9 ``body-type-1part``).

    ``lines`` is required for ``text/*`` and ``message/rfc822``; ``envelope`` and ``body``
    for ``message/rfc822``. The last four fields are extension data (BODYSTRUCTURE only).
    """

    media_type: Text
    subtype: Text
    size: int
    params: Params = ()
    content_id: Text | None = None
    description: Text | None = None
    encoding: Text = "7BIT"
    lines: int | None = None
    envelope: Envelope | None = None
    body: BodyStructure | None = None
    md5: Text | None = None
    disposition: Disposition | None = None
    language: tuple[Text, ...] = ()
    location: Text | None = None


@dataclass(frozen=True, slots=True)
class MultiPart:
    """A multipart body (RFC 3501 §9 ``body-type-mpart``); extension data last."""

    parts: tuple[BodyStructure, ...]
    subtype: Text
    params: Params = ()
    disposition: Disposition | None = None
    language: tuple[Text, ...] = ()
    location: Text | None = None


BodyStructure: TypeAlias = SinglePart | MultiPart


def body_structure_value(body: BodyStructure, *, extensible: bool) -> Encoded:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) as a response value."""
    return Encoded(_body(body, extensible))


def _params(params: Params) -> Value:
    return tuple(item for pair in params for item in pair) or None


def _extension(
    disposition: Disposition | None, language: tuple[Text, ...], location: Text | None
) -> list[Value]:
    dsp = None if disposition is None else (disposition.kind, _params(disposition.params))
    lang: Value = None if not language else language[0] if len(language) == 1 else language
    return [dsp, lang, location]


def _body(body: BodyStructure, extensible: bool) -> bytes:
    if isinstance(body, MultiPart):
        if not body.parts:
            raise ValueError("a multipart body has at least one part")
        fields: list[Value] = [body.subtype]
        if extensible:
            fields += [
                _params(body.params),
                *_extension(body.disposition, body.language, body.location),
            ]
        parts = b"".join(_body(part, extensible) for part in body.parts)
        return b"(" + parts + b" " + b" ".join(encode_value(v) for v in fields) + b")"
    values: list[Value] = [
        body.media_type,
        body.subtype,
        _params(body.params),
        body.content_id,
        body.description,
        body.encoding,
        body.size,
    ]
    if body.envelope is not None or body.body is not None:
        if body.envelope is None or body.body is None or body.lines is None:
            raise ValueError("message/rfc822 needs envelope, body and lines")
        values += [envelope_value(body.envelope), Encoded(_body(body.body, extensible))]
    if body.lines is not None:
        values.append(body.lines)
    if extensible:
        values += [body.md5, *_extension(body.disposition, body.language, body.location)]
    return encode_value(tuple(values))
