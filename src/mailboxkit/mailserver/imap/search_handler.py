"""SEARCH and UID SEARCH, with ESEARCH results (RFC 3501 §6.4.4, RFC 4731 §3.1, RFC 7162
§3.1.5 MODSEQ). How keys become SQL is in ``search_query``.

Implementation notes:

- CHARSET may be US-ASCII or UTF-8 (RFC 3501 §6.4.4 requires both); others are
  ``NO [BADCHARSET (US-ASCII UTF-8)]``.
- Only messages the session knows are searched (their sequence numbers must exist); a
  message expunged meanwhile is not found.
- With a MODSEQ key the results carry the highest mod-sequence among them (RFC 7162 §3.1.5).
- ``RETURN (SAVE)`` keeps the result, as UIDs, in the view for ``$`` (RFC 5182 §2.1): all of
  it, or only the MIN and/or MAX message when those come without ALL or COUNT (§2.4). SAVE
  alone answers no ESEARCH. A SEARCH with SAVE that fails empties ``$``.
- After ENABLE IMAP4rev2 a SEARCH without RETURN is answered as ``RETURN (ALL)`` with
  ESEARCH (RFC 9051 §6.4.4), and RECENT, NEW and OLD are BAD: RFC 9051 §9 has no such keys,
  as it has no ``\\Recent``.
"""

from __future__ import annotations

from collections.abc import Callable

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap import search as s
from mailboxkit.mailserver.imap.context import Context, Outcome
from mailboxkit.mailserver.imap.errors import CommandFailed
from mailboxkit.mailserver.imap.mailbox_view import InvalidSequence, MailboxView
from mailboxkit.mailserver.imap.responses import BadCharset, Condition, ESearchData, SearchData
from mailboxkit.mailserver.imap.search_query import (
    ROW_COLUMNS,
    Decoder,
    compile_key,
    matches,
    split_and,
)
from mailboxkit.mailserver.imap.state import Selected
from mailboxkit.mailserver.imap.sync import enable_condstore
from mailboxkit.store import models as m
from mailboxkit.store.entries import select_entries

CHARSETS = ("US-ASCII", "UTF-8")


def _uses(key: s.SearchKey, leaf: Callable[[s.SearchKey], bool]) -> bool:
    """Whether ``leaf`` holds for a key anywhere in ``key`` (under NOT, OR and AND)."""
    if isinstance(key, s.SearchNot):
        return _uses(key.key, leaf)
    if isinstance(key, s.SearchOr):
        return _uses(key.left, leaf) or _uses(key.right, leaf)
    if isinstance(key, s.SearchAnd):
        return any(_uses(k, leaf) for k in key.keys)
    return leaf(key)


def _modseq(key: s.SearchKey) -> bool:
    return isinstance(key, s.SearchModSeq)


def _recent(key: s.SearchKey) -> bool:
    return isinstance(key, s.SearchFlag) and key.flag == "\\Recent"


def _forget(state: Selected, command: c.Search) -> None:
    """Empty ``$`` when a SEARCH that was to save it fails (RFC 5182 §2.1)."""
    if s.SearchReturn.SAVE in (command.return_options or ()):
        state.view.saved = ()


async def handle_search(ctx: Context, state: Selected, command: c.Search) -> Outcome:
    """Find messages. State: Selected. RFC 3501 §6.4.4, RFC 4731 §3.1, RFC 7162 §3.1.5,
    RFC 5182 §2 (SAVE), RFC 9051 §6.4.4."""
    if command.charset is not None and command.charset not in CHARSETS:
        _forget(state, command)
        raise CommandFailed("Unsupported charset", BadCharset(CHARSETS))
    if ctx.imap4rev2 and _uses(command.key, _recent):
        _forget(state, command)
        raise CommandFailed("No RECENT, NEW or OLD in IMAP4rev2", condition=Condition.BAD)
    view, decode = state.view, Decoder(command.charset)
    with_modseq = _uses(command.key, _modseq)
    if with_modseq:
        await enable_condstore(ctx, view)
    try:
        compiled = [compile_key(k, view, decode) for k in split_and(command.key)]
    except InvalidSequence:  # the session answers BAD
        _forget(state, command)
        raise
    conditions = [condition for condition in compiled if condition is not None]
    in_python = len(conditions) < len(compiled)
    async with ctx.services.db.read() as conn:
        rows = await select_entries(
            conn,
            view.folder_id,
            ROW_COLUMNS if in_python else (m.entries.c.uid, m.entries.c.modseq),
            conditions,
            last_uid=view.known_uid,
        )
    found = [
        (row.uid, row.modseq)
        for row in rows
        if view.sequence_number(row.uid) is not None
        and (not in_python or matches(command.key, row, view, decode))
    ]
    await _answer(ctx, view, command, sorted(found), with_modseq)
    return Outcome("SEARCH completed")


async def _answer(
    ctx: Context,
    view: MailboxView,
    command: c.Search,
    found: list[tuple[int, int]],
    with_modseq: bool,
) -> None:
    """Send the result of ``found`` (UID, MODSEQ pairs, ascending): ``* SEARCH``, or
    ``* ESEARCH`` when RETURN was given or IMAP4rev2 is on; SAVE keeps it for ``$``."""
    numbers = [uid if command.uid else view.sequence_number(uid) or 0 for uid, _ in found]
    modseq = max((modseq for _, modseq in found), default=None) if with_modseq else None
    options = command.return_options
    if options is None and ctx.imap4rev2:
        options = (s.SearchReturn.ALL,)
    if options is None:
        await ctx.conn.send(SearchData(tuple(numbers), modseq if numbers else None))
        return
    if s.SearchReturn.SAVE in options:
        view.saved = _saved(options, [uid for uid, _ in found])
    if set(options) != {s.SearchReturn.SAVE}:
        await ctx.conn.send(_esearch(command, options, numbers, modseq))


def _saved(options: tuple[s.SearchReturn, ...], uids: list[int]) -> tuple[int, ...]:
    """What SAVE keeps (RFC 5182 §2.4): MIN and/or MAX alone keep only those messages."""
    extremes = {s.SearchReturn.MIN, s.SearchReturn.MAX}
    if (
        not uids
        or not extremes & set(options)
        or {s.SearchReturn.ALL, s.SearchReturn.COUNT} & set(options)
    ):
        return tuple(uids)
    kept = {uids[0]} if s.SearchReturn.MIN in options else set()
    if s.SearchReturn.MAX in options:
        kept.add(uids[-1])
    return tuple(sorted(kept))


def _esearch(
    command: c.Search,
    options_given: tuple[s.SearchReturn, ...],
    numbers: list[int],
    modseq: int | None,
) -> ESearchData:
    options = set(options_given)
    return ESearchData(
        tag=command.tag,
        uid=command.uid,
        minimum=min(numbers) if numbers and s.SearchReturn.MIN in options else None,
        maximum=max(numbers) if numbers and s.SearchReturn.MAX in options else None,
        all=tuple(numbers) if numbers and s.SearchReturn.ALL in options else None,
        count=len(numbers) if s.SearchReturn.COUNT in options else None,
        modseq=modseq if numbers else None,
    )
