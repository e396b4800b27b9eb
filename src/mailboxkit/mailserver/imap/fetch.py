"""FETCH: typed fetch attributes and the FETCH command (RFC 3501 §6.4.5).

Covers the RFC 3501 items and macros, ``BODY[section]<partial>`` and ``BODY.PEEK``,
``BINARY[part]``, ``BINARY.PEEK`` and ``BINARY.SIZE`` (RFC 3516 §4.1), ``MODSEQ`` and the
``CHANGEDSINCE``/``VANISHED`` modifiers (RFC 7162 §3.1.4, §3.2.6).

Implementation notes:

- Macros (ALL, FAST, FULL) are expanded at parse time (RFC 3501 §6.4.5); they are only valid
  alone, not inside a parenthesized list.
- ``response_name`` gives the name a FETCH response uses for an attribute: ``BODY.PEEK`` is
  answered as ``BODY``, a partial as ``<origin>`` (RFC 3501 §7.4.2).
- The handler adds what RFC 3501/7162 imply: ``UID`` for UID FETCH (§6.4.8), ``MODSEQ``
  with CHANGEDSINCE (RFC 7162 §3.1.4.1), and sets ``\\Seen`` for non-PEEK bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from mailboxkit.mailserver.imap.sequence_set import MAX_NUMBER, SequenceSet
from mailboxkit.mailserver.imap.tokens import ParseError, Tokens


class FetchItem(StrEnum):
    """Fetch attributes without arguments (RFC 3501 §6.4.5, RFC 7162 §3.1.4)."""

    ENVELOPE = "ENVELOPE"
    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822 = "RFC822"
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_SIZE = "RFC822.SIZE"
    RFC822_TEXT = "RFC822.TEXT"
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    MODSEQ = "MODSEQ"


MACROS: dict[str, tuple[FetchItem, ...]] = {
    "ALL": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
    "FAST": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE),
    "FULL": (
        FetchItem.FLAGS,
        FetchItem.INTERNALDATE,
        FetchItem.RFC822_SIZE,
        FetchItem.ENVELOPE,
        FetchItem.BODY,
    ),
}
"""RFC 3501 §6.4.5 macros and what they stand for."""


class SectionText(StrEnum):
    """RFC 3501 §9 ``section-msgtext`` / ``section-text``."""

    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 3501 §9 ``section-spec``: part path, then optionally a text part.

    ``Section()`` is ``[]``, the whole message. ``fields`` is set for HEADER.FIELDS[.NOT].
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join([*map(str, self.part), *([self.text.value] if self.text else [])])
        if self.fields:
            spec += " (" + " ".join(_field_token(name) for name in self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class Partial:
    """``<offset.length>`` (RFC 3501 §6.4.5)."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<partial>`` or ``BODY.PEEK[...]`` (RFC 3501 §6.4.5)."""

    section: Section = Section()
    peek: bool = False
    partial: Partial | None = None


@dataclass(frozen=True, slots=True)
class BinarySection:
    """``BINARY[part]<partial>`` or ``BINARY.PEEK[...]`` (RFC 3516 §4.1)."""

    part: tuple[int, ...] = ()
    peek: bool = False
    partial: Partial | None = None


@dataclass(frozen=True, slots=True)
class BinarySize:
    """``BINARY.SIZE[part]`` (RFC 3516 §4.1)."""

    part: tuple[int, ...] = ()


FetchAttribute: TypeAlias = FetchItem | BodySection | BinarySection | BinarySize


def response_name(attribute: FetchAttribute) -> str:
    """The item name a FETCH response uses for ``attribute`` (RFC 3501 §7.4.2)."""
    if isinstance(attribute, FetchItem):
        return attribute.value
    if isinstance(attribute, BinarySize):
        return f"BINARY.SIZE[{_part(attribute.part)}]"
    origin = "" if attribute.partial is None else f"<{attribute.partial.offset}>"
    if isinstance(attribute, BodySection):
        return f"BODY[{attribute.section}]{origin}"
    return f"BINARY[{_part(attribute.part)}]{origin}"


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH (RFC 3501 §6.4.5, §6.4.8; RFC 7162 §3.1.4, §3.2.6).

    ``changed_since``: only messages with a greater mod-sequence. ``vanished``: also report
    expunged UIDs as ``VANISHED (EARLIER)`` (UID FETCH with CHANGEDSINCE only).
    """

    tag: str
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False


_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_SPEC = re.compile(rb"[A-Za-z0-9.]+")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext
_FIELD_ATOM = re.compile(r"[A-Za-z0-9!#$&'+,\-./:;<=>?@^_`|}~]+")


def parse_fetch(tokens: Tokens, tag: str, uid: bool) -> Fetch:
    """``FETCH SP sequence-set SP (macro / fetch-att / "(" fetch-att ... ")") [modifiers]``."""
    tokens.space()
    sequence_set = tokens.sequence_set()
    tokens.space()
    if tokens.next_is(b"("):
        attributes = tokens.parenthesized(lambda: _attribute(tokens))
    else:
        macro = tokens.peek_keyword()
        if macro in MACROS:
            tokens.keyword()
            attributes = MACROS[macro]
        else:
            attributes = (_attribute(tokens),)
    changed_since: int | None = None
    vanished = False
    if tokens.accept(b" "):
        for name, value in tokens.parenthesized(lambda: _modifier(tokens)):
            if name == "CHANGEDSINCE" and changed_since is None:
                changed_since = value
            elif name == "VANISHED" and not vanished:
                vanished = True
            else:
                raise ParseError("Duplicate FETCH modifier")
    if vanished and not (uid and changed_since is not None):
        raise ParseError("VANISHED needs UID FETCH with CHANGEDSINCE")  # RFC 7162 §3.2.6
    return Fetch(tag, sequence_set, tuple(dict.fromkeys(attributes)), uid, changed_since, vanished)


def _modifier(tokens: Tokens) -> tuple[str, int | None]:
    name = tokens.keyword()
    if name == "CHANGEDSINCE":
        tokens.space()
        return name, tokens.mod_sequence()
    if name == "VANISHED":
        return name, None
    raise ParseError("Unknown FETCH modifier")


def _attribute(tokens: Tokens) -> FetchAttribute:
    name = tokens.match(_NAME, "fetch attribute").group().decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and tokens.next_is(b"["):
        section = _section(tokens)
        return BodySection(section, name == "BODY.PEEK", _partial(tokens))
    if name in ("BINARY", "BINARY.PEEK"):
        part = _binary_part(tokens)
        return BinarySection(part, name == "BINARY.PEEK", _partial(tokens))
    if name == "BINARY.SIZE":
        return BinarySize(_binary_part(tokens))
    try:
        return FetchItem(name)
    except ValueError:
        raise ParseError("Unknown fetch attribute") from None


def _section(tokens: Tokens) -> Section:
    """RFC 3501 §9 ``section``: ``"[" [section-spec] "]"``."""
    tokens.expect(b"[", "[")
    if tokens.accept(b"]"):
        return Section()
    words = tokens.match(_SECTION_SPEC, "section").group().decode("ascii").upper().split(".")
    part: list[int] = []
    while words and words[0].isdigit():
        part.append(_part_number(words.pop(0)))
    text: SectionText | None = None
    if words:
        try:
            text = SectionText(".".join(words))
        except ValueError:
            raise ParseError("Invalid section") from None
        if text is SectionText.MIME and not part:
            raise ParseError("MIME needs a part number")  # RFC 3501 §9 section-text
    fields: tuple[str, ...] = ()
    if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
        tokens.space()
        fields = tokens.parenthesized(lambda: _field_name(tokens))
    tokens.expect(b"]", "]")
    return Section(tuple(part), text, fields)


def _binary_part(tokens: Tokens) -> tuple[int, ...]:
    """RFC 3516 §4.1 ``section-binary``: ``"[" [section-part] "]"``."""
    tokens.expect(b"[", "[")
    if tokens.accept(b"]"):
        return ()
    words = tokens.match(_SECTION_SPEC, "section part").group().decode("ascii").split(".")
    part = tuple(_part_number(word) for word in words)
    tokens.expect(b"]", "]")
    return part


def _part_number(word: str) -> int:
    if not word.isdigit() or word.startswith("0") or len(word) > 10 or int(word) > MAX_NUMBER:
        raise ParseError("Invalid section part")
    return int(word)


def _field_name(tokens: Tokens) -> str:
    name = tokens.astring().decode("ascii", "replace")
    if not _FIELD_NAME.fullmatch(name):
        raise ParseError("Invalid header field name")
    return name


def _partial(tokens: Tokens) -> Partial | None:
    """``"<" number "." nz-number ">"``."""
    if not tokens.accept(b"<"):
        return None
    offset = tokens.number()
    tokens.expect(b".", ".")
    length = tokens.nz_number()
    tokens.expect(b">", ">")
    return Partial(offset, length)


def _part(part: tuple[int, ...]) -> str:
    return ".".join(map(str, part))


def _field_token(name: str) -> str:
    if _FIELD_ATOM.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
