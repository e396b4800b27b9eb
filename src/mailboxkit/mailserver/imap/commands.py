"""Typed IMAP commands and ``parse_command`` (RFC 3501 §6, §9 ``command``).

One frozen dataclass per command; mailbox commands live in ``mailbox_commands``, SEARCH in
``search``, FETCH in ``fetch``; this module holds the rest, the :data:`Command` union and the
dispatch tables (command name -> parser).

Implementation notes:

- ``parse_command`` raises only :class:`CommandSyntaxError` (rendered ``tag BAD ...``, or
  ``* BAD ...`` when no tag could be read). Whether a command is allowed in the current
  state, and whether its capability is enabled, is the state table's job, not the parser's.
- ``UID`` is a ``uid: bool`` field of FETCH, SEARCH, STORE, COPY, MOVE (RFC 3501 §6.4.8,
  RFC 6851 §3.2); ``UID EXPUNGE set`` (RFC 4315 §2.1) is :class:`Expunge` with a ``uid_set``.
- IDLE (RFC 2177 §3): after ``+ idling`` the server reads frames until :func:`is_idle_done`.
  AUTHENTICATE (RFC 3501 §6.2.2): each client response line goes to
  :func:`parse_sasl_response`; the initial response is SASL-IR (RFC 4959 §3).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from mailboxkit.mailserver.imap.errors import CommandSyntaxError
from mailboxkit.mailserver.imap.fetch import Fetch, parse_fetch
from mailboxkit.mailserver.imap.mailbox_commands import (
    Append,
    Create,
    Delete,
    Examine,
    List,
    Lsub,
    Rename,
    Select,
    Status,
    Subscribe,
    Unsubscribe,
    parse_append,
    parse_create,
    parse_delete,
    parse_examine,
    parse_list,
    parse_lsub,
    parse_rename,
    parse_select,
    parse_status,
    parse_subscribe,
    parse_unsubscribe,
)
from mailboxkit.mailserver.imap.search import Search, parse_search
from mailboxkit.mailserver.imap.sequence_set import SequenceSet
from mailboxkit.mailserver.imap.tokens import ParseError, Tokens
from mailboxkit.mailserver.imap.wire import Frame

ID_MAX_PAIRS = 30
ID_MAX_FIELD = 30
ID_MAX_VALUE = 1024
"""RFC 2971 §3.3 bounds on ID parameters."""


@dataclass(frozen=True, slots=True)
class Capability:
    """CAPABILITY (RFC 3501 §6.1.1)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP (RFC 3501 §6.1.2)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    """LOGOUT (RFC 3501 §6.1.3)."""

    tag: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS (RFC 3501 §6.2.1). Octets pipelined after it must be discarded (RFC 2595
    §3.1 hazard): check ``Framer.buffered`` / the reader buffer before the handshake."""

    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE (RFC 3501 §6.2.2) with an optional SASL-IR initial response (RFC 4959).

    ``initial_response`` is decoded; ``=`` on the wire is ``b""``.
    """

    tag: str
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login:
    """LOGIN (RFC 3501 §6.2.3). Never log ``password``."""

    tag: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login(tag={self.tag!r}, username={self.username!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class Enable:
    """ENABLE (RFC 5161 §3.1); capability names upper-cased."""

    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Namespace:
    """NAMESPACE (RFC 2342 §5)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971 §3.1); ``parameters is None`` for ``ID NIL``."""

    tag: str
    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Idle:
    """IDLE (RFC 2177 §3); ends when the client sends ``DONE`` (see :func:`is_idle_done`)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Check:
    """CHECK (RFC 3501 §6.4.1)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    """CLOSE (RFC 3501 §6.4.2): expunge silently, then deselect."""

    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    """UNSELECT (RFC 3691 §2): deselect without expunging."""

    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE (RFC 3501 §6.4.3), or ``UID EXPUNGE uid_set`` (RFC 4315 §2.1)."""

    tag: str
    uid_set: SequenceSet | None = None

    @property
    def uid(self) -> bool:
        """Whether this is UID EXPUNGE."""
        return self.uid_set is not None


class StoreMode(StrEnum):
    """How STORE applies its flags (RFC 3501 §6.4.6)."""

    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE (RFC 3501 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

    tag: str
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    uid: bool = False
    silent: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY / UID COPY (RFC 3501 §6.4.7)."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """MOVE / UID MOVE (RFC 6851 §3)."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class GetQuota:
    """GETQUOTA (RFC 9208 §4.2)."""

    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA (RFC 9208 §4.1): resource names and limits for a quota root."""

    tag: str
    root: str
    resources: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    """GETQUOTAROOT (RFC 9208 §4.3)."""

    tag: str
    mailbox: str


Command: TypeAlias = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Namespace
    | Id
    | Select
    | Examine
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Status
    | Append
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
    | GetQuota
    | GetQuotaRoot
    | SetQuota
)


def parse_command(frame: Frame, *, utf8_names: bool = False) -> Command:
    """Parse one framed command; raise :class:`CommandSyntaxError` if it is malformed.

    ``utf8_names``: the session enabled IMAP4rev2, whose mailbox names are UTF-8 (RFC 9051
    §5.1), not modified UTF-7.
    """
    tokens = Tokens(frame, utf8_names=utf8_names)
    try:
        tag = tokens.tag()
    except ParseError as error:
        raise CommandSyntaxError(None, error.message) from None
    try:
        tokens.space()
        parser = _COMMANDS.get(tokens.keyword())
        if parser is None:
            raise ParseError("Unknown command")
        command = parser(tokens, tag)
        tokens.finish()
    except ParseError as error:
        raise CommandSyntaxError(tag, error.message) from None
    except ValueError:  # a value out of range for its type, caught by a dataclass check
        raise CommandSyntaxError(tag, "Invalid arguments") from None
    return command


def is_idle_done(frame: Frame) -> bool:
    """Whether a frame read during IDLE is the ``DONE`` that ends it (RFC 2177 §3)."""
    return frame.literals == () and frame.lines[0].upper() == b"DONE"


def parse_sasl_response(frame: Frame, tag: str) -> bytes | None:
    """A client's AUTHENTICATE response line (RFC 3501 §6.2.2): decoded octets, or ``None``
    when the client cancels with ``*``. Invalid base64 is ``tag BAD``."""
    line = frame.lines[0]
    if frame.literals:
        raise CommandSyntaxError(tag, "Invalid SASL response")
    if line == b"*":
        return None
    try:
        return base64.b64decode(line, validate=True)
    except binascii.Error:
        raise CommandSyntaxError(tag, "Invalid base64") from None


def _no_arguments(command: Callable[[str], Command]) -> Callable[[Tokens, str], Command]:
    return lambda tokens, tag: command(tag)


def _parse_authenticate(tokens: Tokens, tag: str) -> Authenticate:
    tokens.space()
    mechanism = tokens.keyword()
    initial: bytes | None = None
    if tokens.accept(b" "):
        if tokens.accept(b"="):
            initial = b""
        else:
            try:
                initial = base64.b64decode(tokens.atom(), validate=True)
            except binascii.Error:
                raise ParseError("Invalid base64") from None
    return Authenticate(tag, mechanism, initial)


def _parse_login(tokens: Tokens, tag: str) -> Login:
    tokens.space()
    username = tokens.utf8_astring()
    tokens.space()
    return Login(tag, username, tokens.utf8_astring())


def _parse_enable(tokens: Tokens, tag: str) -> Enable:
    capabilities = [_after_space(tokens).keyword()]
    while tokens.accept(b" "):
        capabilities.append(tokens.keyword())
    return Enable(tag, tuple(dict.fromkeys(capabilities)))


def _parse_id(tokens: Tokens, tag: str) -> Id:
    tokens.space()
    if tokens.peek_keyword() == "NIL":
        tokens.keyword()
        return Id(tag, None)
    items = tokens.parenthesized(tokens.nstring, allow_empty=True)
    if len(items) % 2 or len(items) > 2 * ID_MAX_PAIRS:
        raise ParseError("Invalid ID parameters")
    pairs: list[tuple[str, str | None]] = []
    for name, value in zip(items[::2], items[1::2], strict=True):
        if name is None or len(name) > ID_MAX_FIELD or len(value or b"") > ID_MAX_VALUE:
            raise ParseError("Invalid ID parameters")
        text = None if value is None else value.decode("utf-8", "replace")
        pairs.append((name.decode("utf-8", "replace"), text))
    return Id(tag, tuple(pairs))


def _parse_setquota(tokens: Tokens, tag: str) -> SetQuota:
    root = _after_space(tokens).utf8_astring()
    tokens.space()

    def resource() -> tuple[str, int]:
        name = tokens.keyword()
        tokens.space()
        return name, tokens.number()

    return SetQuota(tag, root, tokens.parenthesized(resource, allow_empty=True))


def _parse_expunge(tokens: Tokens, tag: str) -> Expunge:
    return Expunge(tag)


def _parse_uid_expunge(tokens: Tokens, tag: str, uid: bool) -> Expunge:
    return Expunge(tag, _after_space(tokens).sequence_set())


def _parse_store(tokens: Tokens, tag: str, uid: bool) -> Store:
    sequence_set = _after_space(tokens).sequence_set()
    tokens.space()
    unchanged_since: int | None = None
    if tokens.next_is(b"("):
        modifiers = tokens.parenthesized(lambda: _store_modifier(tokens))
        if len(modifiers) > 1:
            raise ParseError("Duplicate STORE modifier")
        unchanged_since = modifiers[0]
        tokens.space()
    item = tokens.keyword()
    silent = item.endswith(".SILENT")
    try:
        mode = StoreMode(item.removesuffix(".SILENT"))
    except ValueError:
        raise ParseError("Invalid STORE item") from None
    tokens.space()
    if tokens.next_is(b"("):
        flags = tokens.flag_list()
    else:
        flags_list = [tokens.flag()]
        while tokens.accept(b" "):
            flags_list.append(tokens.flag())
        flags = tuple(flags_list)
    return Store(tag, sequence_set, mode, tuple(dict.fromkeys(flags)), uid, silent, unchanged_since)


def _store_modifier(tokens: Tokens) -> int:
    if tokens.keyword() != "UNCHANGEDSINCE":
        raise ParseError("Unknown STORE modifier")
    return _after_space(tokens).mod_sequence(allow_zero=True)


def _parse_copy(tokens: Tokens, tag: str, uid: bool) -> Copy:
    sequence_set = _after_space(tokens).sequence_set()
    return Copy(tag, sequence_set, _after_space(tokens).mailbox(), uid)


def _parse_move(tokens: Tokens, tag: str, uid: bool) -> Move:
    sequence_set = _after_space(tokens).sequence_set()
    return Move(tag, sequence_set, _after_space(tokens).mailbox(), uid)


def _parse_uid(tokens: Tokens, tag: str) -> Command:
    parser = _UID_COMMANDS.get(_after_space(tokens).keyword())
    if parser is None:
        raise ParseError("Unknown UID command")
    return parser(tokens, tag, True)


def _not_uid(
    parser: Callable[[Tokens, str, bool], Command],
) -> Callable[[Tokens, str], Command]:
    return lambda tokens, tag: parser(tokens, tag, False)


def _after_space(tokens: Tokens) -> Tokens:
    tokens.space()
    return tokens


_UID_COMMANDS: dict[str, Callable[[Tokens, str, bool], Command]] = {
    "COPY": _parse_copy,
    "MOVE": _parse_move,
    "FETCH": parse_fetch,
    "SEARCH": parse_search,
    "STORE": _parse_store,
    "EXPUNGE": _parse_uid_expunge,
}
"""``UID <command>`` parsers (RFC 3501 §6.4.8, RFC 6851 §3.2, RFC 4315 §2.1)."""

_COMMANDS: dict[str, Callable[[Tokens, str], Command]] = {
    "CAPABILITY": _no_arguments(Capability),
    "NOOP": _no_arguments(Noop),
    "LOGOUT": _no_arguments(Logout),
    "STARTTLS": _no_arguments(StartTls),
    "AUTHENTICATE": _parse_authenticate,
    "LOGIN": _parse_login,
    "ENABLE": _parse_enable,
    "NAMESPACE": _no_arguments(Namespace),
    "ID": _parse_id,
    "SELECT": parse_select,
    "EXAMINE": parse_examine,
    "CREATE": parse_create,
    "DELETE": parse_delete,
    "RENAME": parse_rename,
    "SUBSCRIBE": parse_subscribe,
    "UNSUBSCRIBE": parse_unsubscribe,
    "LIST": parse_list,
    "LSUB": parse_lsub,
    "STATUS": parse_status,
    "APPEND": parse_append,
    "IDLE": _no_arguments(Idle),
    "CHECK": _no_arguments(Check),
    "CLOSE": _no_arguments(Close),
    "UNSELECT": _no_arguments(Unselect),
    "EXPUNGE": _parse_expunge,
    "SEARCH": _not_uid(parse_search),
    "FETCH": _not_uid(parse_fetch),
    "STORE": _not_uid(_parse_store),
    "COPY": _not_uid(_parse_copy),
    "MOVE": _not_uid(_parse_move),
    "UID": _parse_uid,
    "GETQUOTA": lambda tokens, tag: GetQuota(tag, _after_space(tokens).utf8_astring()),
    "GETQUOTAROOT": lambda tokens, tag: GetQuotaRoot(tag, _after_space(tokens).mailbox()),
    "SETQUOTA": _parse_setquota,
}
"""Command name -> parser of the arguments after it (RFC 3501 §9 ``command``)."""

__all__ = [
    "Append",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "Rename",
    "Search",
    "Select",
    "SetQuota",
    "StartTls",
    "Status",
    "Store",
    "StoreMode",
    "Subscribe",
    "Unselect",
    "Unsubscribe",
    "is_idle_done",
    "parse_command",
    "parse_sasl_response",
]
