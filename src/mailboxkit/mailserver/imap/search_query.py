"""SEARCH keys as SQL over ``entries`` and ``messages``, and the same keys in Python for what
SQL cannot say portably (RFC 3501 §6.4.4).

Implementation notes:

- :func:`compile_key` returns a condition, or None when a key needs Python: a header other
  than FROM/TO/CC/SUBJECT, a non-ASCII string (SQLite's ``lower`` folds ASCII only; JSON
  columns hold ``\\u`` escapes), a string with ``"`` or ``\\`` against a JSON column. The
  handler puts the compiled conjuncts of the top-level AND in the WHERE clause and, if any
  part needed Python, checks the whole key with :func:`matches` on the rows that remain.
- Strings match case-insensitively as substrings of decoded values (RFC 3501 §6.4.4, RFC
  9051 §6.4.4.1): FROM/TO/CC/BCC search names and addresses, SUBJECT the decoded subject,
  HEADER the decoded field, BODY the text and HTML bodies, TEXT those and the headers.
- Dates compare in UTC, without time (RFC 3501 §6.4.4 "disregarding time and timezone");
  SENT* use the Date: header, a message without one never matches.
- ``\\Recent`` is never set (RFC 9051 dropped it): RECENT and NEW match nothing.
- Nullable columns are wrapped so that NOT inverts (SQL's NULL would drop the row).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, false, func, not_, or_, true

from mailboxkit.mailserver.imap import search as s
from mailboxkit.mailserver.imap.mailbox_view import MailboxView
from mailboxkit.store import models as m
from mailboxkit.store.entries import SystemFlag, uid_runs

_E, _M = m.entries.c, m.messages.c
_FLAG_COLUMNS = {
    "\\Seen": _E.seen,
    "\\Answered": _E.answered,
    "\\Flagged": _E.flagged,
    "\\Deleted": _E.deleted,
    "\\Draft": _E.draft,
}
_ADDRESS_COLUMNS = {"TO": _M.to_addrs, "CC": _M.cc_addrs}

ROW_COLUMNS = (
    _E.uid,
    _E.modseq,
    _E.seen,
    _E.answered,
    _E.flagged,
    _E.deleted,
    _E.draft,
    _E.keywords,
    _E.internal_date,
    _M.size,
    _M.sent_at,
    _M.subject,
    _M.from_name,
    _M.from_email,
    _M.to_addrs,
    _M.cc_addrs,
    _M.headers,
    _M.text,
    _M.html,
)
"""What :func:`matches` reads of a row."""


class Decoder:
    """Search strings decoded per the command's CHARSET (RFC 3501 §6.4.4), folded."""

    def __init__(self, charset: str | None) -> None:
        self.charset = "utf-8" if charset in (None, "UTF-8", "US-ASCII") else charset

    def __call__(self, value: bytes) -> str:
        return value.decode(self.charset, "replace").casefold()


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    return func.lower(func.coalesce(column, "")).contains(text, autoescape=True)


def _json_contains(column: Any, text: str) -> ColumnElement[bool] | None:
    if not text.isascii() or '"' in text or "\\" in text:
        return None
    return func.lower(cast(column, Text)).contains(text, autoescape=True)


def _uid_condition(uids: list[int]) -> ColumnElement[bool]:
    runs = uid_runs(uids)
    if not runs:
        return false()
    return or_(*(_E.uid.between(low, high) for low, high in runs))


def _day(date: datetime.date) -> datetime.datetime:
    return datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.UTC)


def compile_key(key: s.SearchKey, view: MailboxView, decode: Decoder) -> ColumnElement[bool] | None:
    """``key`` as a SQL condition, or None if it needs Python (see the module notes)."""
    if isinstance(key, s.SearchAll):
        return true()
    if isinstance(key, s.SearchFlag):
        return _flag_condition(key)
    if isinstance(key, s.SearchHeader):
        return _header_condition(key, decode)
    if isinstance(key, s.SearchText):
        text = decode(key.value)
        if not text.isascii():
            return None
        body = or_(_contains(_M.text, text), _contains(_M.html, text))
        if not key.headers:
            return body
        headers = _json_contains(_M.headers, text)
        return None if headers is None else or_(body, headers)
    if isinstance(key, s.SearchDate):
        column = _E.internal_date if key.field is s.DateField.INTERNAL else _M.sent_at
        start, end = _day(key.date), _day(key.date) + datetime.timedelta(days=1)
        condition = {
            s.DateRelation.BEFORE: column < start,
            s.DateRelation.ON: and_(column >= start, column < end),
            s.DateRelation.SINCE: column >= start,
        }[key.relation]
        return and_(column.is_not(None), condition)
    if isinstance(key, s.SearchSize):
        return _M.size > key.size if key.relation is s.SizeRelation.LARGER else _M.size < key.size
    if isinstance(key, s.SearchSequence):
        return _uid_condition(view.resolve(key.sequence_set, uid=key.uid))
    if isinstance(key, s.SearchModSeq):
        return _E.modseq >= key.modseq
    if isinstance(key, s.SearchNot):
        inner = compile_key(key.key, view, decode)
        return None if inner is None else not_(inner)
    if isinstance(key, s.SearchOr):
        left, right = compile_key(key.left, view, decode), compile_key(key.right, view, decode)
        return None if left is None or right is None else or_(left, right)
    parts = [compile_key(k, view, decode) for k in key.keys]
    if any(p is None for p in parts):
        return None
    return and_(*(p for p in parts if p is not None))


def _flag_condition(key: s.SearchFlag) -> ColumnElement[bool]:
    if key.flag == "\\Recent":
        return false() if key.present else true()
    column = _FLAG_COLUMNS.get(key.flag)
    if column is not None:
        return column.is_(True) if key.present else column.is_(False)
    needle = f'"{key.flag.lower()}"'
    condition = func.lower(cast(_E.keywords, Text)).contains(needle, autoescape=True)
    return condition if key.present else not_(condition)


def _header_condition(key: s.SearchHeader, decode: Decoder) -> ColumnElement[bool] | None:
    name, text = key.name.upper(), decode(key.value)
    if not text.isascii() or not text:
        return None
    if name == "SUBJECT":
        return _contains(_M.subject, text)
    if name == "FROM":
        return or_(_contains(_M.from_name, text), _contains(_M.from_email, text))
    column = _ADDRESS_COLUMNS.get(name)
    return None if column is None else _json_contains(column, text)


def split_and(key: s.SearchKey) -> tuple[s.SearchKey, ...]:
    """The conjuncts of the top-level AND (a single key is its own conjunct)."""
    return key.keys if isinstance(key, s.SearchAnd) else (key,)


def matches(key: s.SearchKey, row: Any, view: MailboxView, decode: Decoder) -> bool:
    """Whether a row (of :data:`ROW_COLUMNS`) matches ``key``, all in Python."""
    check: Callable[[s.SearchKey], bool] = lambda k: matches(k, row, view, decode)  # noqa: E731
    if isinstance(key, s.SearchAll):
        return True
    if isinstance(key, s.SearchFlag):
        return _has_flag(row, key.flag) == key.present
    if isinstance(key, s.SearchHeader):
        return _header_matches(row, key.name, decode(key.value))
    if isinstance(key, s.SearchText):
        text = decode(key.value)
        body = f"{row.text or ''}\n{row.html or ''}".casefold()
        if text in body:
            return True
        return key.headers and any(text in f"{n}: {v}".casefold() for n, v in row.headers or ())
    if isinstance(key, s.SearchDate):
        moment = row.internal_date if key.field is s.DateField.INTERNAL else row.sent_at
        if moment is None:
            return False
        day: datetime.date = moment.astimezone(datetime.UTC).date()
        return {
            s.DateRelation.BEFORE: day < key.date,
            s.DateRelation.ON: day == key.date,
            s.DateRelation.SINCE: day >= key.date,
        }[key.relation]
    if isinstance(key, s.SearchSize):
        size: int = row.size
        return size > key.size if key.relation is s.SizeRelation.LARGER else size < key.size
    if isinstance(key, s.SearchSequence):
        return row.uid in set(view.resolve(key.sequence_set, uid=key.uid))
    if isinstance(key, s.SearchModSeq):
        return bool(row.modseq >= key.modseq)
    if isinstance(key, s.SearchNot):
        return not check(key.key)
    if isinstance(key, s.SearchOr):
        return check(key.left) or check(key.right)
    return all(check(k) for k in key.keys)


def _has_flag(row: Any, flag: str) -> bool:
    if flag == "\\Recent":
        return False
    try:
        return bool(getattr(row, SystemFlag(flag).name.lower()))
    except ValueError:
        return flag.lower() in {k.lower() for k in row.keywords or ()}


def _header_matches(row: Any, name: str, text: str) -> bool:
    name = name.lower()
    if name in ("to", "cc"):
        addresses = row.to_addrs if name == "to" else row.cc_addrs
        values = [f"{a.get('name', '')} <{a.get('email', '')}>" for a in addresses or ()]
        if values and any(text in v.casefold() for v in values):
            return True
    if name == "from" and text in f"{row.from_name} <{row.from_email}>".casefold():
        return True
    fields = [v for n, v in row.headers or () if n.lower() == name]
    return any(text in v.casefold() for v in fields) if text else bool(fields)
