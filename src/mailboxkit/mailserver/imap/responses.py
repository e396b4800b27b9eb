"""IMAP response values and their byte-exact serializer.

RFC 3501 §7 (server responses) and §9 (``response``), plus the response data and codes of
UIDPLUS (RFC 4315), CONDSTORE/QRESYNC (RFC 7162), ESEARCH (RFC 4731), ENABLE (RFC 5161),
NAMESPACE (RFC 2342), ID (RFC 2971), QUOTA (RFC 9208), LIST-EXTENDED (RFC 5258),
SPECIAL-USE (RFC 6154), response codes (RFC 5530) and APPENDLIMIT (RFC 7889).

Implementation notes:

- Handlers build values; :func:`serialize` is the only place that writes protocol octets.
- Data values (strings, literals, lists, dates) are encoded by ``values``, whose names this
  module re-exports.
- Human-readable text is sanitized to TEXT-CHARs (RFC 3501 §9 ``text``) so that nothing a
  client supplied (a mailbox name in an error, say) can inject a line break.
- Mailbox names are encoded as modified UTF-7 (RFC 3501 §5.1.3), or as UTF-8 for a session
  that enabled IMAP4rev2 (``serialize(..., utf8_names=True)``, RFC 9051 §5.1), and always sent
  as strings; a UTF-8 one quoted when it can be (RFC 9051 §9 ``QUOTED-CHAR`` has UTF-8).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from mailboxkit.mailserver.imap.mailbox_names import wire_mailbox_name
from mailboxkit.mailserver.imap.sequence_set import compact_uids
from mailboxkit.mailserver.imap.values import QUOTED_MAX as QUOTED_MAX
from mailboxkit.mailserver.imap.values import Atom as Atom
from mailboxkit.mailserver.imap.values import Binary as Binary
from mailboxkit.mailserver.imap.values import Encoded as Encoded
from mailboxkit.mailserver.imap.values import Value as Value
from mailboxkit.mailserver.imap.values import encode_string as encode_string
from mailboxkit.mailserver.imap.values import encode_value as encode_value
from mailboxkit.mailserver.imap.values import format_date_time as format_date_time
from mailboxkit.mailserver.imap.values import quote

_QUOTABLE_UTF8 = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\xff]*")  # of valid UTF-8: no CR, LF
_NOT_TEXT = re.compile(r"[^\x20-\x7e]")
_ATOM = re.compile(r"[A-Za-z0-9!#$&'+,\-./:;<=>?@^_`|}~]+")


class Condition(StrEnum):
    """Status response condition (RFC 3501 §7.1; ABNF ``resp-cond-state``, ``resp-cond-bye``)."""

    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    PREAUTH = "PREAUTH"
    BYE = "BYE"


class Code(StrEnum):
    """Response codes without arguments (RFC 3501 §7.1, RFC 5530, RFC 7162, RFC 4315 ...)."""

    ALERT = "ALERT"
    PARSE = "PARSE"
    READ_ONLY = "READ-ONLY"
    READ_WRITE = "READ-WRITE"
    TRYCREATE = "TRYCREATE"
    UIDNOTSTICKY = "UIDNOTSTICKY"  # RFC 4315 §3
    CLOSED = "CLOSED"  # RFC 7162 §3.2.11
    NOMODSEQ = "NOMODSEQ"  # RFC 7162 §3.1.2
    USEATTR = "USEATTR"  # RFC 6154 §6
    TOOBIG = "TOOBIG"  # RFC 4469 §4, RFC 7888 §4, RFC 7889
    UNAVAILABLE = "UNAVAILABLE"  # RFC 5530 §3 (this and the rest below)
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
    AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
    EXPIRED = "EXPIRED"
    PRIVACYREQUIRED = "PRIVACYREQUIRED"
    CONTACTADMIN = "CONTACTADMIN"
    NOPERM = "NOPERM"
    INUSE = "INUSE"
    EXPUNGEISSUED = "EXPUNGEISSUED"
    CORRUPTION = "CORRUPTION"
    SERVERBUG = "SERVERBUG"
    CLIENTBUG = "CLIENTBUG"
    CANNOT = "CANNOT"
    LIMIT = "LIMIT"
    OVERQUOTA = "OVERQUOTA"
    ALREADYEXISTS = "ALREADYEXISTS"
    NONEXISTENT = "NONEXISTENT"
    UNKNOWN_CTE = "UNKNOWN-CTE"  # RFC 3516 §4.3


class NumberCodeName(StrEnum):
    """Response codes carrying one number (RFC 3501 §7.1, RFC 7162 §3.1.1)."""

    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"


@dataclass(frozen=True, slots=True)
class NumberCode:
    """``[UIDNEXT n]``, ``[UIDVALIDITY n]``, ``[UNSEEN n]``, ``[HIGHESTMODSEQ n]``."""

    name: NumberCodeName
    value: int


@dataclass(frozen=True, slots=True)
class AppendUid:
    """``[APPENDUID uidvalidity uid-set]`` (RFC 4315 §3; a set after MULTIAPPEND)."""

    uidvalidity: int
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyUid:
    """``[COPYUID uidvalidity source-uids destination-uids]`` (RFC 4315 §3).

    Both sets are rendered ascending, so the n-th source UID pairs with the n-th destination
    UID only if the handler assigned destination UIDs in ascending source order.
    """

    uidvalidity: int
    source: tuple[int, ...]
    destination: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(set(self.source)) != len(set(self.destination)):
            raise ValueError("COPYUID source and destination sets differ in size")


@dataclass(frozen=True, slots=True)
class CapabilityCode:
    """``[CAPABILITY ...]`` (RFC 3501 §7.1)."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PermanentFlags:
    """``[PERMANENTFLAGS (...)]`` (RFC 3501 §7.1); may include ``\\*``."""

    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Modified:
    """``[MODIFIED set]``: messages that failed UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BadCharset:
    """``[BADCHARSET (...)]`` (RFC 3501 §7.1): the charsets SEARCH supports."""

    charsets: tuple[str, ...]


ResponseCode: TypeAlias = (
    Code
    | NumberCode
    | AppendUid
    | CopyUid
    | CapabilityCode
    | PermanentFlags
    | Modified
    | BadCharset
)


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """``tag OK/NO/BAD [code] text`` or, with ``tag=None``, ``* OK/NO/BAD/PREAUTH/BYE ...``."""

    condition: Condition
    text: str
    tag: str | None = None
    code: ResponseCode | None = None

    def __post_init__(self) -> None:
        if self.tag is not None and self.condition not in (
            Condition.OK,
            Condition.NO,
            Condition.BAD,
        ):
            raise ValueError(f"{self.condition} is never tagged (RFC 3501 §7.1)")
        if not self.text:
            raise ValueError("response text must not be empty (RFC 3501 §9 text)")


@dataclass(frozen=True, slots=True)
class Continuation:
    """``+ text`` (RFC 3501 §7.5); ``text`` may be a base64 SASL challenge or empty."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Exists:
    """``* n EXISTS`` (RFC 3501 §7.3.1)."""

    count: int


@dataclass(frozen=True, slots=True)
class Recent:
    """``* n RECENT`` (RFC 3501 §7.3.2)."""

    count: int


@dataclass(frozen=True, slots=True)
class Expunged:
    """``* n EXPUNGE`` (RFC 3501 §7.4.1)."""

    sequence_number: int


@dataclass(frozen=True, slots=True)
class Vanished:
    """``* VANISHED [(EARLIER)] uids`` (RFC 7162 §3.2.10); replaces EXPUNGE under QRESYNC."""

    uids: tuple[int, ...]
    earlier: bool = False


@dataclass(frozen=True, slots=True)
class FlagsData:
    """``* FLAGS (...)`` (RFC 3501 §7.2.6)."""

    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CapabilityData:
    """``* CAPABILITY ...`` (RFC 3501 §7.2.1)."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EnabledData:
    """``* ENABLED ...`` (RFC 5161 §3.2); may be empty."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListData:
    """``* LIST (attrs) delim name [extended]`` (RFC 3501 §7.2.2, RFC 5258 §3.5).

    ``child_info`` renders ``("CHILDINFO" (...))`` (RFC 5258 §3.5), ``old_name``
    ``("OLDNAME" (name))`` (RFC 5465 §5.4). ``lsub=True`` renders an LSUB response.
    """

    attributes: tuple[str, ...]
    delimiter: str | None
    mailbox: str
    child_info: tuple[str, ...] = ()
    old_name: str | None = None
    lsub: bool = False


@dataclass(frozen=True, slots=True)
class StatusData:
    """``* STATUS name (item value ...)`` (RFC 3501 §7.2.4); ``None`` renders ``NIL``.

    ``NIL`` is only meaningful for ``APPENDLIMIT`` (RFC 7889 §4).
    """

    mailbox: str
    items: tuple[tuple[str, int | None], ...]


@dataclass(frozen=True, slots=True)
class SearchData:
    """``* SEARCH n ... [(MODSEQ m)]`` (RFC 3501 §7.2.5, RFC 7162 §3.1.5)."""

    numbers: tuple[int, ...]
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class ESearchData:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b ALL set COUNT n [MODSEQ m]`` (RFC 4731 §3.1).

    Fields left ``None`` are omitted: RFC 4731 §3.1 omits MIN/MAX/ALL when nothing matched.
    """

    tag: str | None
    uid: bool
    minimum: int | None = None
    maximum: int | None = None
    all: tuple[int, ...] | None = None
    count: int | None = None
    modseq: int | None = None


@dataclass(frozen=True, slots=True)
class Namespace:
    """One namespace description: prefix and hierarchy delimiter (RFC 2342 §5)."""

    prefix: str
    delimiter: str | None


@dataclass(frozen=True, slots=True)
class NamespaceData:
    """``* NAMESPACE personal other shared`` (RFC 2342 §5); ``None`` renders ``NIL``."""

    personal: tuple[Namespace, ...] | None
    other: tuple[Namespace, ...] | None = None
    shared: tuple[Namespace, ...] | None = None


@dataclass(frozen=True, slots=True)
class QuotaData:
    """``* QUOTA root (resource usage limit ...)`` (RFC 9208 §5.1); at least one resource."""

    root: str
    resources: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class QuotaRootData:
    """``* QUOTAROOT mailbox root ...`` (RFC 9208 §5.2): the quota roots of a mailbox."""

    mailbox: str
    roots: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IdData:
    """``* ID (field value ...)`` or ``* ID NIL`` (RFC 2971 §3.2)."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class FetchData:
    """``* n FETCH (name value ...)`` (RFC 3501 §7.4.2).

    Names are the response item names (``fetch.FetchAttribute.response_name``), values are
    :data:`Value` trees; ``body_structure`` builds ENVELOPE and BODYSTRUCTURE values.
    """

    sequence_number: int
    items: tuple[tuple[str, Value], ...]


Response: TypeAlias = (
    StatusResponse
    | Continuation
    | Exists
    | Recent
    | Expunged
    | Vanished
    | FlagsData
    | CapabilityData
    | EnabledData
    | ListData
    | StatusData
    | SearchData
    | ESearchData
    | NamespaceData
    | QuotaData
    | QuotaRootData
    | IdData
    | FetchData
)


def serialize(response: Response, *, utf8_names: bool = False) -> bytes:
    """The exact octets of one response, CRLF included; ``utf8_names`` for a session that
    enabled IMAP4rev2 (mailbox names in UTF-8, RFC 9051 §5.1)."""
    return _body(response, utf8_names) + b"\r\n"


def _text(text: str) -> bytes:
    return _NOT_TEXT.sub("?", text.replace("\r", " ").replace("\n", " ")).encode("ascii")


def _token(text: str) -> bytes:
    """An astring-ish token: atom when possible, otherwise a string."""
    return text.encode("ascii") if _ATOM.fullmatch(text) else encode_value(text)


def _mailbox(name: str, utf8: bool) -> bytes:
    data = wire_mailbox_name(name, utf8=utf8)
    if utf8 and len(data) <= QUOTED_MAX and _QUOTABLE_UTF8.fullmatch(data):
        return quote(data)
    return encode_string(data)


def _flags(flags: Sequence[str]) -> bytes:
    return b"(" + b" ".join(flag.encode("ascii") for flag in flags) + b")"


def _words(words: Sequence[str]) -> bytes:
    return b"".join(b" " + word.encode("ascii") for word in words)


def _code(code: ResponseCode) -> bytes:
    if isinstance(code, Code):
        return code.value.encode("ascii")
    if isinstance(code, NumberCode):
        return b"%s %d" % (code.name.value.encode("ascii"), code.value)
    if isinstance(code, AppendUid):
        return f"APPENDUID {code.uidvalidity} {compact_uids(code.uids)}".encode("ascii")
    if isinstance(code, CopyUid):
        source, destination = compact_uids(code.source), compact_uids(code.destination)
        return f"COPYUID {code.uidvalidity} {source} {destination}".encode("ascii")
    if isinstance(code, CapabilityCode):
        return b"CAPABILITY" + _words(code.capabilities)
    if isinstance(code, PermanentFlags):
        return b"PERMANENTFLAGS " + _flags(code.flags)
    if isinstance(code, Modified):
        return b"MODIFIED " + compact_uids(code.numbers).encode("ascii")
    return b"BADCHARSET (" + b" ".join(_token(name) for name in code.charsets) + b")"


def _status(response: StatusResponse) -> bytes:
    tag = b"*" if response.tag is None else response.tag.encode("ascii")
    code = b"" if response.code is None else b"[" + _code(response.code) + b"] "
    return b"%s %s %s%s" % (
        tag,
        response.condition.value.encode("ascii"),
        code,
        _text(response.text),
    )


def _list(response: ListData, utf8: bool) -> bytes:
    name = b"LSUB" if response.lsub else b"LIST"
    delimiter = encode_value(response.delimiter)
    out = b"* %s %s %s %s" % (
        name,
        _flags(response.attributes),
        delimiter,
        _mailbox(response.mailbox, utf8),
    )
    extended: list[bytes] = []
    if response.child_info:
        infos = b" ".join(encode_value(info) for info in response.child_info)
        extended.append(b'"CHILDINFO" (' + infos + b")")
    if response.old_name is not None:
        extended.append(b'"OLDNAME" (' + _mailbox(response.old_name, utf8) + b")")
    return out + (b" (" + b" ".join(extended) + b")" if extended else b"")


def _esearch(response: ESearchData) -> bytes:
    out = b"* ESEARCH"
    if response.tag is not None:
        out += b" (TAG " + encode_value(response.tag) + b")"
    if response.uid:
        out += b" UID"
    for name, number in (("MIN", response.minimum), ("MAX", response.maximum)):
        if number is not None:
            out += b" %s %d" % (name.encode("ascii"), number)
    if response.all:
        out += b" ALL " + compact_uids(response.all).encode("ascii")
    for name, number in (("COUNT", response.count), ("MODSEQ", response.modseq)):
        if number is not None:
            out += b" %s %d" % (name.encode("ascii"), number)
    return out


def _namespaces(namespaces: tuple[Namespace, ...] | None, utf8: bool) -> bytes:
    if namespaces is None:
        return b"NIL"
    parts = (
        b"(" + _mailbox(ns.prefix, utf8) + b" " + encode_value(ns.delimiter) + b")"
        for ns in namespaces
    )
    return b"(" + b"".join(parts) + b")"


def _body(response: Response, utf8: bool) -> bytes:
    if isinstance(response, FetchData):  # first: a FETCH 1:* sends one per message
        items = b" ".join(
            b"%s %s" % (name.encode("ascii"), encode_value(v)) for name, v in response.items
        )
        return b"* %d FETCH (%s)" % (response.sequence_number, items)
    if isinstance(response, StatusResponse):
        return _status(response)
    if isinstance(response, Continuation):
        return b"+ " + _text(response.text)
    if isinstance(response, Exists):
        return b"* %d EXISTS" % response.count
    if isinstance(response, Recent):
        return b"* %d RECENT" % response.count
    if isinstance(response, Expunged):
        return b"* %d EXPUNGE" % response.sequence_number
    if isinstance(response, Vanished):
        earlier = b" (EARLIER)" if response.earlier else b""
        return b"* VANISHED%s %s" % (earlier, compact_uids(response.uids).encode("ascii"))
    if isinstance(response, FlagsData):
        return b"* FLAGS " + _flags(response.flags)
    if isinstance(response, CapabilityData):
        return b"* CAPABILITY" + _words(response.capabilities)
    if isinstance(response, EnabledData):
        return b"* ENABLED" + _words(response.capabilities)
    if isinstance(response, ListData):
        return _list(response, utf8)
    if isinstance(response, StatusData):
        items = b" ".join(
            name.encode("ascii") + b" " + encode_value(value) for name, value in response.items
        )
        return b"* STATUS " + _mailbox(response.mailbox, utf8) + b" (" + items + b")"
    if isinstance(response, SearchData):
        out = b"* SEARCH" + b"".join(b" %d" % n for n in response.numbers)
        return out + (b"" if response.modseq is None else b" (MODSEQ %d)" % response.modseq)
    if isinstance(response, ESearchData):
        return _esearch(response)
    if isinstance(response, NamespaceData):
        spaces = (response.personal, response.other, response.shared)
        return b"* NAMESPACE " + b" ".join(_namespaces(ns, utf8) for ns in spaces)
    if isinstance(response, QuotaData):
        items = b" ".join(
            b"%s %d %d" % (name.encode("ascii"), usage, limit)
            for name, usage, limit in response.resources
        )
        return b"* QUOTA " + encode_value(response.root) + b" (" + items + b")"
    if isinstance(response, QuotaRootData):
        roots = b"".join(b" " + encode_value(root) for root in response.roots)
        return b"* QUOTAROOT " + _mailbox(response.mailbox, utf8) + roots
    if isinstance(response, IdData):
        if response.parameters is None:
            return b"* ID NIL"
        pairs = tuple(item for pair in response.parameters for item in pair)
        return b"* ID " + encode_value(pairs)
    raise TypeError(f"not a response: {response!r}")
