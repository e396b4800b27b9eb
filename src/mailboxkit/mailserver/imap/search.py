"""SEARCH: the typed search-key tree and the SEARCH command.

RFC 3501 §6.4.4 (every search key), RFC 4731 §3.1 (ESEARCH ``RETURN`` options), RFC 7162
§3.1.5 (``MODSEQ`` key), RFC 4466 §2.6 (order: ``RETURN`` before ``CHARSET``).

Implementation notes:

- Keys are normalized into a small tree the handler evaluates: FROM/TO/CC/BCC/SUBJECT are
  :class:`SearchHeader` (RFC 3501 §6.4.4 defines them as header searches), system-flag keys
  and KEYWORD/UNKEYWORD are :class:`SearchFlag`, NEW is ``RECENT UNSEEN`` and OLD is
  ``NOT RECENT`` (RFC 3501 §6.4.4), a key list is :class:`SearchAnd`.
- Search strings stay as octets: their meaning depends on ``charset``, which the handler
  validates (``NO [BADCHARSET]``, RFC 3501 §6.4.4) before decoding.
- ``return_options`` is ``None`` for a classic SEARCH (``* SEARCH`` response) and a tuple for
  ESEARCH; ``RETURN ()`` means ``ALL`` (RFC 4731 §3.1). ``SAVE`` (RFC 5182 §2.1) keeps the
  result for ``$``; ``$`` is a sequence set wherever one may stand, here too (RFC 5182 §2.2).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from mailboxkit.mailserver.imap.sequence_set import SequenceSet
from mailboxkit.mailserver.imap.tokens import SYSTEM_FLAGS, ParseError, Tokens


class DateField(StrEnum):
    """Which date a date key compares: INTERNALDATE or the Date: header (SENT*)."""

    INTERNAL = "INTERNAL"
    SENT = "SENT"


class DateRelation(StrEnum):
    """BEFORE, ON, SINCE: dates compare without time or zone (RFC 3501 §6.4.4)."""

    BEFORE = "BEFORE"
    ON = "ON"
    SINCE = "SINCE"


class SizeRelation(StrEnum):
    """LARGER / SMALLER than an RFC822.SIZE."""

    LARGER = "LARGER"
    SMALLER = "SMALLER"


class SearchReturn(StrEnum):
    """ESEARCH result options (RFC 4731 §3.1)."""

    MIN = "MIN"
    MAX = "MAX"
    ALL = "ALL"
    COUNT = "COUNT"
    SAVE = "SAVE"  # RFC 5182 §2.1


@dataclass(frozen=True, slots=True)
class SearchAll:
    """ALL."""


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A flag or keyword is set (``present``) or not: SEEN, UNSEEN, KEYWORD x, RECENT ..."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """``HEADER name value``; also FROM, TO, CC, BCC, SUBJECT. Empty value: has the field."""

    name: str
    value: bytes


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY (``headers=False``) or TEXT (``headers=True``): substring of the message."""

    value: bytes
    headers: bool


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    field: DateField
    relation: DateRelation
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n / SMALLER n."""

    relation: SizeRelation
    size: int


@dataclass(frozen=True, slots=True)
class SearchSequence:
    """A bare sequence set (``uid=False``) or ``UID set``."""

    sequence_set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """``MODSEQ ["/flags/<flag>" priv|shared|all] n`` (RFC 7162 §3.1.5): mod-sequence >= n."""

    modseq: int
    flag: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class SearchNot:
    """NOT key."""

    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    """OR key key."""

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """All keys match: a parenthesized list, or several top-level keys."""

    keys: tuple[SearchKey, ...]


SearchKey: TypeAlias = (
    SearchAll
    | SearchFlag
    | SearchHeader
    | SearchText
    | SearchDate
    | SearchSize
    | SearchSequence
    | SearchModSeq
    | SearchNot
    | SearchOr
    | SearchAnd
)


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH (RFC 3501 §6.4.4, RFC 4731 §3.1)."""

    tag: str
    key: SearchKey
    uid: bool = False
    charset: str | None = None
    return_options: tuple[SearchReturn, ...] | None = None


def parse_search(tokens: Tokens, tag: str, uid: bool) -> Search:
    """``SEARCH [SP RETURN (...)] [SP CHARSET astring] 1*(SP search-key)``."""
    tokens.space()
    return_options: tuple[SearchReturn, ...] | None = None
    if tokens.peek_keyword() == "RETURN":
        tokens.keyword()
        tokens.space()
        options = tokens.parenthesized(lambda: _return_option(tokens), allow_empty=True)
        return_options = tuple(dict.fromkeys(options)) or (SearchReturn.ALL,)
        tokens.space()
    charset: str | None = None
    if tokens.peek_keyword() == "CHARSET":
        tokens.keyword()
        tokens.space()
        charset = tokens.astring().decode("ascii", "replace").upper()
        tokens.space()
    keys = [search_key(tokens)]
    while tokens.accept(b" "):
        keys.append(search_key(tokens))
    key = keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    return Search(tag, key, uid, charset, return_options)


def _return_option(tokens: Tokens) -> SearchReturn:
    try:
        return SearchReturn(tokens.keyword())
    except ValueError:
        raise ParseError("Unsupported RETURN option") from None


def search_key(tokens: Tokens) -> SearchKey:
    """One RFC 3501 §9 ``search-key``."""
    if tokens.next_is(b"("):
        return SearchAnd(tokens.parenthesized(lambda: search_key(tokens)))
    name = tokens.peek_keyword()
    if name is None or name[0] in "0123456789$":
        return SearchSequence(tokens.sequence_set())
    tokens.keyword()
    parser = _KEYS.get(name)
    if parser is None:
        raise ParseError("Unknown search key")
    return parser(tokens, name)


def _argument(tokens: Tokens) -> Tokens:
    tokens.space()
    return tokens


def _flag_key(flag: str, present: bool) -> Callable[[Tokens, str], SearchKey]:
    return lambda tokens, name: SearchFlag(flag, present)


def _keyword_key(present: bool) -> Callable[[Tokens, str], SearchKey]:
    return lambda tokens, name: SearchFlag(_argument(tokens).atom(), present)


def _header_key(tokens: Tokens, name: str) -> SearchKey:
    return SearchHeader(name, _argument(tokens).astring())


def _header(tokens: Tokens, name: str) -> SearchKey:
    field = _argument(tokens).astring().decode("ascii", "replace")
    return SearchHeader(field, _argument(tokens).astring())


def _text(headers: bool) -> Callable[[Tokens, str], SearchKey]:
    return lambda tokens, name: SearchText(_argument(tokens).astring(), headers)


def _date(field: DateField, relation: DateRelation) -> Callable[[Tokens, str], SearchKey]:
    return lambda tokens, name: SearchDate(field, relation, _argument(tokens).date())


def _size(relation: SizeRelation) -> Callable[[Tokens, str], SearchKey]:
    return lambda tokens, name: SearchSize(relation, _argument(tokens).number())


def _not(tokens: Tokens, name: str) -> SearchKey:
    with tokens.nested():
        return SearchNot(search_key(_argument(tokens)))


def _or(tokens: Tokens, name: str) -> SearchKey:
    with tokens.nested():
        left = search_key(_argument(tokens))
        return SearchOr(left, search_key(_argument(tokens)))


def _uid(tokens: Tokens, name: str) -> SearchKey:
    return SearchSequence(_argument(tokens).sequence_set(), uid=True)


def _modseq(tokens: Tokens, name: str) -> SearchKey:
    tokens.space()
    if not tokens.next_is(b'"'):
        return SearchModSeq(tokens.mod_sequence(allow_zero=True))
    entry = tokens.string().decode("ascii", "replace")
    if not entry.lower().startswith("/flags/"):
        raise ParseError("Invalid MODSEQ entry name")
    flag = entry[len("/flags/") :]
    flag = SYSTEM_FLAGS.get(flag.upper(), flag)
    entry_type = _argument(tokens).keyword().lower()
    if entry_type not in ("priv", "shared", "all"):
        raise ParseError("Invalid MODSEQ entry type")
    return SearchModSeq(_argument(tokens).mod_sequence(allow_zero=True), flag, entry_type)


_KEYS: dict[str, Callable[[Tokens, str], SearchKey]] = {
    "ALL": lambda tokens, name: SearchAll(),
    "ANSWERED": _flag_key("\\Answered", True),
    "DELETED": _flag_key("\\Deleted", True),
    "DRAFT": _flag_key("\\Draft", True),
    "FLAGGED": _flag_key("\\Flagged", True),
    "RECENT": _flag_key("\\Recent", True),
    "SEEN": _flag_key("\\Seen", True),
    "UNANSWERED": _flag_key("\\Answered", False),
    "UNDELETED": _flag_key("\\Deleted", False),
    "UNDRAFT": _flag_key("\\Draft", False),
    "UNFLAGGED": _flag_key("\\Flagged", False),
    "UNSEEN": _flag_key("\\Seen", False),
    "OLD": _flag_key("\\Recent", False),
    "NEW": lambda tokens, name: SearchAnd(
        (SearchFlag("\\Recent", True), SearchFlag("\\Seen", False))
    ),
    "KEYWORD": _keyword_key(True),
    "UNKEYWORD": _keyword_key(False),
    "BCC": _header_key,
    "CC": _header_key,
    "FROM": _header_key,
    "SUBJECT": _header_key,
    "TO": _header_key,
    "HEADER": _header,
    "BODY": _text(False),
    "TEXT": _text(True),
    "BEFORE": _date(DateField.INTERNAL, DateRelation.BEFORE),
    "ON": _date(DateField.INTERNAL, DateRelation.ON),
    "SINCE": _date(DateField.INTERNAL, DateRelation.SINCE),
    "SENTBEFORE": _date(DateField.SENT, DateRelation.BEFORE),
    "SENTON": _date(DateField.SENT, DateRelation.ON),
    "SENTSINCE": _date(DateField.SENT, DateRelation.SINCE),
    "LARGER": _size(SizeRelation.LARGER),
    "SMALLER": _size(SizeRelation.SMALLER),
    "NOT": _not,
    "OR": _or,
    "UID": _uid,
    "MODSEQ": _modseq,
}
"""Dispatch table: search key name -> parser of its arguments (RFC 3501 §6.4.4)."""
