"""Commands that name a mailbox: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND (RFC 3501 §6.3) and their extensions.

Extensions: SELECT/EXAMINE ``(CONDSTORE)`` and ``(QRESYNC (...))`` (RFC 7162 §3.1.8,
§3.2.5); ``CREATE name (USE (...))`` (RFC 6154 §3); extended LIST with selection and return
options (RFC 5258 §3), ``RETURN (SPECIAL-USE)`` (RFC 6154 §2) and ``RETURN (STATUS (...))``
(RFC 5819 §2); MULTIAPPEND (RFC 3502) and ``literal8`` APPEND data (RFC 3516 §4.4).

Implementation notes:

- Mailbox names arrive decoded (modified UTF-7 or UTF-8, ``INBOX`` normalized); the handler
  never sees wire encodings.
- Unknown SELECT/CREATE parameters and LIST options are BAD: RFC 4466 §2 lets a server reject
  parameters it does not understand, and guessing would silently change results.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from mailboxkit.mailserver.imap.sequence_set import SequenceSet
from mailboxkit.mailserver.imap.tokens import ParseError, Tokens

E = TypeVar("E", bound=StrEnum)


class StatusItem(StrEnum):
    """STATUS data items (RFC 3501 §6.3.10, RFC 7162 §3.1.6, RFC 8438, RFC 7889, RFC 9051)."""

    MESSAGES = "MESSAGES"
    RECENT = "RECENT"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"
    SIZE = "SIZE"
    APPENDLIMIT = "APPENDLIMIT"
    DELETED = "DELETED"


class ListSelectOption(StrEnum):
    """LIST selection options (RFC 5258 §3.1, RFC 6154 §2)."""

    SUBSCRIBED = "SUBSCRIBED"
    REMOTE = "REMOTE"
    RECURSIVEMATCH = "RECURSIVEMATCH"
    SPECIAL_USE = "SPECIAL-USE"


class ListReturnOption(StrEnum):
    """LIST return options without arguments (RFC 5258 §3.2, RFC 6154 §2).

    ``RETURN (STATUS (...))`` (RFC 5819) is :attr:`List.status_items`.
    """

    SUBSCRIBED = "SUBSCRIBED"
    CHILDREN = "CHILDREN"
    SPECIAL_USE = "SPECIAL-USE"


SPECIAL_USES = {
    use.upper(): use
    for use in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
"""RFC 6154 §2 special-use attributes by upper-cased name."""


@dataclass(frozen=True, slots=True)
class QResync:
    """``QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)])`` (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_sequence_set: SequenceSet | None = None
    known_uid_set: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT (RFC 3501 §6.3.1) with CONDSTORE / QRESYNC parameters (RFC 7162)."""

    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Examine:
    """EXAMINE (RFC 3501 §6.3.2): SELECT, read-only."""

    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """CREATE (RFC 3501 §6.3.3), with ``USE (...)`` special-use attributes (RFC 6154 §3)."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    """DELETE (RFC 3501 §6.3.4)."""

    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    """RENAME (RFC 3501 §6.3.5)."""

    tag: str
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (RFC 3501 §6.3.6)."""

    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (RFC 3501 §6.3.7)."""

    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST (RFC 3501 §6.3.8) and extended LIST (RFC 5258, RFC 5819, RFC 6154).

    ``extended`` is set when any RFC 5258 syntax was used; the response may then carry
    extended data items (RFC 5258 §3.5).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select_options: frozenset[ListSelectOption] = field(default_factory=frozenset)
    return_options: frozenset[ListReturnOption] = field(default_factory=frozenset)
    status_items: tuple[StatusItem, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub:
    """LSUB (RFC 3501 §6.3.9)."""

    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS (RFC 3501 §6.3.10)."""

    tag: str
    mailbox: str
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND: data, flags, internal date, literal8 or not."""

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND (RFC 3501 §6.3.11); several messages with MULTIAPPEND (RFC 3502 §6.3.11)."""

    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]


def parse_select(tokens: Tokens, tag: str) -> Select:
    """``SELECT SP mailbox [SP "(" select-param *(SP select-param) ")"]``."""
    mailbox, condstore, qresync = _select_arguments(tokens)
    return Select(tag, mailbox, condstore, qresync)


def parse_examine(tokens: Tokens, tag: str) -> Examine:
    """``EXAMINE SP mailbox [select-params]``."""
    mailbox, condstore, qresync = _select_arguments(tokens)
    return Examine(tag, mailbox, condstore, qresync)


def _select_arguments(tokens: Tokens) -> tuple[str, bool, QResync | None]:
    tokens.space()
    mailbox = tokens.mailbox()
    condstore, qresync = False, None
    if tokens.accept(b" "):
        for name, value in tokens.parenthesized(lambda: _select_param(tokens)):
            if name == "CONDSTORE" and not condstore:
                condstore = True
            elif name == "QRESYNC" and qresync is None:
                qresync = value
            else:
                raise ParseError("Duplicate SELECT parameter")
    return mailbox, condstore, qresync


def _select_param(tokens: Tokens) -> tuple[str, QResync | None]:
    name = tokens.keyword()
    if name == "CONDSTORE":
        return name, None
    if name != "QRESYNC":
        raise ParseError("Unknown SELECT parameter")
    tokens.space()
    tokens.expect(b"(", "(")
    uidvalidity = tokens.nz_number()
    tokens.space()
    modseq = tokens.mod_sequence()
    known_uids = sequences = uids = None
    if tokens.accept(b" "):
        if not tokens.next_is(b"("):
            known_uids = _known_set(tokens)
        if known_uids is None or tokens.accept(b" "):
            tokens.expect(b"(", "(")
            sequences = _known_set(tokens)
            tokens.space()
            uids = _known_set(tokens)
            tokens.expect(b")", ")")
    qresync = QResync(uidvalidity, modseq, known_uids, sequences, uids)
    tokens.expect(b")", ")")
    return name, qresync


def _known_set(tokens: Tokens) -> SequenceSet:
    """RFC 7162 §7 ``known-uids`` / ``seq-match-data`` sets: ``*`` is not allowed."""
    sequence_set = tokens.sequence_set()
    if sequence_set.uses_star or sequence_set.saved:  # a SELECT resets $ (RFC 5182 §2.1)
        raise ParseError("'*' and '$' not allowed in QRESYNC sets")
    return sequence_set


def parse_create(tokens: Tokens, tag: str) -> Create:
    """``CREATE SP mailbox [SP "(" "USE" SP "(" [use-attr *(SP use-attr)] ")" ")"]``."""
    tokens.space()
    mailbox = tokens.mailbox()
    uses: tuple[str, ...] = ()
    if tokens.accept(b" "):
        params = tokens.parenthesized(lambda: _create_param(tokens))
        if len(params) > 1:
            raise ParseError("Duplicate CREATE parameter")
        uses = params[0]
    return Create(tag, mailbox, tuple(dict.fromkeys(uses)))


def _create_param(tokens: Tokens) -> tuple[str, ...]:
    if tokens.keyword() != "USE":
        raise ParseError("Unknown CREATE parameter")
    tokens.space()
    return tokens.parenthesized(lambda: _use_attribute(tokens), allow_empty=True)


def _use_attribute(tokens: Tokens) -> str:
    flag = tokens.flag()
    if not flag.startswith("\\"):
        raise ParseError("Invalid special-use attribute")
    return SPECIAL_USES.get(flag.upper(), flag)


def parse_delete(tokens: Tokens, tag: str) -> Delete:
    """``DELETE SP mailbox``."""
    tokens.space()
    return Delete(tag, tokens.mailbox())


def parse_subscribe(tokens: Tokens, tag: str) -> Subscribe:
    """``SUBSCRIBE SP mailbox``."""
    tokens.space()
    return Subscribe(tag, tokens.mailbox())


def parse_unsubscribe(tokens: Tokens, tag: str) -> Unsubscribe:
    """``UNSUBSCRIBE SP mailbox``."""
    tokens.space()
    return Unsubscribe(tag, tokens.mailbox())


def parse_rename(tokens: Tokens, tag: str) -> Rename:
    """``RENAME SP mailbox SP mailbox``."""
    tokens.space()
    mailbox = tokens.mailbox()
    tokens.space()
    return Rename(tag, mailbox, tokens.mailbox())


def parse_list(tokens: Tokens, tag: str) -> List:
    """``LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]``."""
    tokens.space()
    extended = False
    select: tuple[ListSelectOption, ...] = ()
    if tokens.next_is(b"("):
        extended = True
        select = tokens.parenthesized(lambda: _option(tokens, ListSelectOption), allow_empty=True)
        tokens.space()
    if ListSelectOption.RECURSIVEMATCH in select and ListSelectOption.SUBSCRIBED not in select:
        raise ParseError("RECURSIVEMATCH needs a base option")  # RFC 5258 §3.1
    reference = tokens.mailbox()
    tokens.space()
    if tokens.next_is(b"("):
        extended = True
        patterns = tokens.parenthesized(tokens.list_mailbox)
    else:
        patterns = (tokens.list_mailbox(),)
    returns: list[ListReturnOption] = []
    status_items: tuple[StatusItem, ...] = ()
    if tokens.accept(b" "):
        extended = True
        if tokens.keyword() != "RETURN":
            raise ParseError("Expected RETURN")
        tokens.space()
        for option in tokens.parenthesized(lambda: _return_option(tokens), allow_empty=True):
            if isinstance(option, ListReturnOption):
                returns.append(option)
            elif status_items:
                raise ParseError("Duplicate STATUS return option")
            else:
                status_items = option
    return List(
        tag, reference, patterns, frozenset(select), frozenset(returns), status_items, extended
    )


def _return_option(tokens: Tokens) -> ListReturnOption | tuple[StatusItem, ...]:
    if tokens.peek_keyword() == "STATUS":
        tokens.keyword()
        tokens.space()
        return _status_items(tokens)  # RFC 5819 §2
    return _option(tokens, ListReturnOption)


def _option(tokens: Tokens, kind: type[E]) -> E:
    try:
        return kind(tokens.keyword())
    except ValueError:
        raise ParseError("Unknown LIST option") from None


def parse_lsub(tokens: Tokens, tag: str) -> Lsub:
    """``LSUB SP mailbox SP list-mailbox``."""
    tokens.space()
    reference = tokens.mailbox()
    tokens.space()
    return Lsub(tag, reference, tokens.list_mailbox())


def parse_status(tokens: Tokens, tag: str) -> Status:
    """``STATUS SP mailbox SP "(" status-att *(SP status-att) ")"``."""
    tokens.space()
    mailbox = tokens.mailbox()
    tokens.space()
    return Status(tag, mailbox, _status_items(tokens))


def _status_items(tokens: Tokens) -> tuple[StatusItem, ...]:
    def item() -> StatusItem:
        try:
            return StatusItem(tokens.keyword())
        except ValueError:
            raise ParseError("Unknown STATUS item") from None

    return tuple(dict.fromkeys(tokens.parenthesized(item)))


def parse_append(tokens: Tokens, tag: str) -> Append:
    """``APPEND SP mailbox 1*([SP flag-list] [SP date-time] SP (literal / literal8))``."""
    tokens.space()
    mailbox = tokens.mailbox()
    messages: list[AppendMessage] = []
    while not messages or not tokens.at_end():
        tokens.space()
        flags: tuple[str, ...] = ()
        if tokens.next_is(b"("):
            flags = tuple(dict.fromkeys(tokens.flag_list()))
            tokens.space()
        internal_date = None
        if tokens.next_is(b'"'):
            internal_date = tokens.date_time()
            tokens.space()
        data, binary = tokens.literal(allow_binary=True)
        messages.append(AppendMessage(data, flags, internal_date, binary))
    return Append(tag, mailbox, tuple(messages))
